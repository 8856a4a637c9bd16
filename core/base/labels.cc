#include "base/labels.h"

#include <algorithm>
#include <vector>

namespace prism {
namespace {

std::string Trim(std::string s) {
  s.erase(0, s.find_first_not_of(' '));
  s.erase(s.find_last_not_of(' ') + 1);
  return s;
}

// Negated or not, and the values the rule names; false when malformed.
bool ParseRule(const std::string& rule, bool* negated, std::vector<std::string>* values) {
  std::string body = rule;
  *negated = !body.empty() && body[0] == '!';
  if (*negated) body.erase(0, 1);
  values->clear();
  if (body.rfind("in(", 0) == 0) {
    if (body.back() != ')') return false;
    std::string inner = body.substr(3, body.size() - 4);
    size_t start = 0;
    while (true) {
      size_t comma = inner.find(',', start);
      std::string item =
          Trim(inner.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
      if (item.empty()) return false;
      values->push_back(item);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return true;
  }
  if (body.empty()) return false;
  values->push_back(body);
  return true;
}

}  // namespace

std::string CheckLabelRule(const std::string& key, const std::string& rule) {
  if (key.empty()) return "a label selector's keys are label names, not empty";
  bool negated = false;
  std::vector<std::string> values;
  if (!ParseRule(rule, &negated, &values)) {
    return "label selector " + key + ": '" + rule +
           "' is not a value, '!value', 'in(a,b,...)' or '!in(a,b,...)'";
  }
  return "";
}

bool LabelRuleMatches(const std::string& rule, const std::string* value) {
  bool negated = false;
  std::vector<std::string> values;
  if (!ParseRule(rule, &negated, &values)) return false;
  bool in = value != nullptr && std::find(values.begin(), values.end(), *value) != values.end();
  return in != negated;
}

}  // namespace prism
