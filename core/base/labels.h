// Node labels and label selectors (Ray's label_selector): a selector maps a label to a rule, a
// value ("gpu"), its negation ("!gpu"), one of several ("in(a,b)") or none of them ("!in(a,b)").
#pragma once

#include <string>

namespace prism {

/// Empty when `rule` is well formed; otherwise why not (naming `key`).
std::string CheckLabelRule(const std::string& key, const std::string& rule);
/// Whether a node whose label has `value` (null: the node lacks the label) meets `rule`. A
/// missing label meets only the negative forms; a malformed rule nothing.
bool LabelRuleMatches(const std::string& rule, const std::string* value);

/// Over any map of label -> rule (std::map, a protobuf Map).
template <typename Selector>
std::string CheckLabelSelector(const Selector& selector) {
  for (const auto& [key, rule] : selector) {
    if (std::string bad = CheckLabelRule(key, rule); !bad.empty()) return bad;
  }
  return "";
}

template <typename Labels, typename Selector>
bool LabelsMatch(const Labels& labels, const Selector& selector) {
  for (const auto& [key, rule] : selector) {
    auto it = labels.find(key);
    if (!LabelRuleMatches(rule, it == labels.end() ? nullptr : &it->second)) return false;
  }
  return true;
}

}  // namespace prism
