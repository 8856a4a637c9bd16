// Collectives on gloo: groups of 2, 3 and 4 actors (and 8 for correctness) run every operation on
// every dtype, checked against a reference computed here; sizes of 1, primes and non-multiples of
// the group's size; a rank that never joins and a rank killed mid-allreduce turn into errors
// within the timeout on the others; a destroyed group is created again.
#include <gtest/gtest.h>
#include <prism/collective.h>
#include <prism/gpu/float16.h>
#include <prism/prism.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "collectives/internal.h"
#include "collectives/suite.h"

namespace {

using namespace std::chrono_literals;
namespace col = prism::collective;
using col::DType;
using col::ReduceOp;
using namespace suite;

class Member {
 public:
  int Join(std::string name) { return col::GetGroup(name).rank(); }
  int JoinAs(std::string name, int world, int rank) {
    return col::InitGroup(name, world, rank, col::Backend::kGloo, {.timeout = 10s}).rank();
  }
  std::string TryJoin(std::string name) {
    try {
      return "joined as " + std::to_string(col::GetGroup(name).rank());
    } catch (const col::CollectiveError& e) {
      return e.what();
    }
  }
  std::vector<std::string> Env() {
    std::vector<std::string> out;
    for (const char* k : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) {
      const char* v = std::getenv(k);
      out.push_back(v ? v : "");
    }
    return out;
  }
  int Pid() { return getpid(); }
  // Splits `parent`; in the subgroup, an allreduce of the parent ranks: "none", "<rank>/<size>
  // sum <s>", or the error.
  std::string Split(std::string parent, std::string name, int color, int key) {
    try {
      col::Group* sub = col::SplitGroup(parent, name, color, key);
      if (sub == nullptr) return col::InGroup(name) ? "none, but registered" : "none";
      int64_t v = col::GetGroup(parent).rank();
      sub->AllReduce(&v, &v, 1, DType::kInt64, ReduceOp::kSum);
      if (&col::GetGroup(name) != sub) return "not registered";
      return std::to_string(sub->rank()) + "/" + std::to_string(sub->size()) + " sum " +
             std::to_string(v);
    } catch (const prism::Error& e) {
      return e.what();
    }
  }
  void Leave(std::string name) { col::DestroyGroup(name); }

  // Runs `op` on this rank's inputs (host memory) and returns what it got, as doubles.
  std::vector<double> Run(std::string name, int op, int dtype_int, int reduce_int, int count,
                          int root) {
    col::Group& g = col::GetGroup(name);
    auto dtype = static_cast<DType>(dtype_int);
    auto reduce = static_cast<ReduceOp>(reduce_int);
    suite::Plan plan = suite::MakePlan(g, op, dtype, reduce, count);
    std::vector<uint8_t> recv = plan.initial_recv;
    suite::Apply(g, op, dtype, reduce, count, root, plan.send.data(), recv.data(), nullptr);
    return suite::Outcome(g, op, root, recv, dtype, plan.send);
  }
  // An allreduce of `count` float32 ones: "ok", or the error.
  std::string TryAllReduce(std::string name, int count) {
    std::vector<float> v(static_cast<size_t>(count), 1.0f);
    try {
      col::GetGroup(name).AllReduce(v.data(), v.data(), v.size(), DType::kFloat32, ReduceOp::kSum);
      return v.empty() || v[0] == float(col::GetGroup(name).size()) ? "ok" : "wrong";
    } catch (const prism::Error& e) {
      return e.what();
    }
  }
  std::string TryBadInput(std::string name) {
    col::Group& g = col::GetGroup(name);
    std::string out;
    uint8_t b[4] = {};
    try {
      g.AllReduce(b, b, 4, DType::kUInt8, ReduceOp::kSum);
    } catch (const prism::InvalidArgumentError& e) {
      out += std::string(e.what()) + "\n";
    }
    try {
      g.Broadcast(b, 1, DType::kFloat32, g.size());
    } catch (const prism::InvalidArgumentError& e) {
      out += e.what();
    }
    return out;
  }
};
Member* MakeMember() { return new Member(); }
PRISM_REMOTE(MakeMember, &Member::Join, &Member::JoinAs, &Member::TryJoin, &Member::Env,
             &Member::Pid, &Member::Split, &Member::Leave, &Member::Run, &Member::TryAllReduce,
             &Member::TryBadInput);

class GlooTest : public ::testing::Test {
 protected:
  void SetUp() override { prism::Init({.num_cpus = 8}); }
  void TearDown() override { prism::Shutdown(); }

  std::vector<prism::ActorHandle<Member>> Members(int n) {
    std::vector<prism::ActorHandle<Member>> out;
    for (int i = 0; i < n; ++i) out.push_back(prism::Actor(MakeMember).Remote());
    return out;
  }
  // Runs one operation on every member and checks each rank's result against the reference.
  void Check(const std::vector<prism::ActorHandle<Member>>& m, const std::string& name, int op,
             DType dtype, ReduceOp reduce, int count, int root = 0) {
    int n = static_cast<int>(m.size());
    std::vector<prism::ObjectRef<std::vector<double>>> refs;
    for (auto& a : m) {
      refs.push_back(a.Task(&Member::Run).Remote(name, op, int(dtype), int(reduce), count, root));
    }
    std::vector<std::vector<double>> got;
    for (int r = 0; r < n; ++r) got.push_back(prism::Get(refs[r], 60s));
    ExpectReference(got, op, dtype, reduce, count, root);
  }
};

TEST_F(GlooTest, EveryOperationAndDtypeOnTwoThreeAndFourRanks) {
  for (int n : {2, 3, 4}) {
    auto m = Members(n);
    std::string name = "suite" + std::to_string(n);
    col::CreateGroup(m, col::Backend::kGloo, name, {.timeout = 20s});
    EveryCase(n, [&](int op, DType dtype, ReduceOp reduce, int count, int root) {
      Check(m, name, op, dtype, reduce, count, root);
    });
    col::DestroyGroup(name);
    for (auto& a : m) prism::Kill(a);
  }
}

TEST_F(GlooTest, EightRanksAreCorrect) {
  auto m = Members(8);
  col::CreateGroup(m, col::Backend::kGloo, "eight", {.timeout = 30s});
  for (int count : {1, 13, 4099}) {
    Check(m, "eight", kAllReduce, DType::kFloat32, ReduceOp::kSum, count);
    Check(m, "eight", kAllReduce, DType::kBFloat16, ReduceOp::kProd, count);
    Check(m, "eight", kAllGather, DType::kInt64, ReduceOp::kSum, count);
    Check(m, "eight", kReduceScatter, DType::kFloat64, ReduceOp::kMax, count);
    Check(m, "eight", kBroadcast, DType::kFloat16, ReduceOp::kSum, count, 5);
    Check(m, "eight", kSendRecv, DType::kInt32, ReduceOp::kSum, count);
    Check(m, "eight", kBatchRing, DType::kFloat32, ReduceOp::kSum, count);
  }
}

TEST_F(GlooTest, MembersGetTheTorchDistributedEnvironment) {
  auto m = Members(2);
  col::CreateGroup(m, col::Backend::kGloo, "env");
  auto a = m[0].Task(&Member::Join).Remote(std::string("env"));
  auto b = m[1].Task(&Member::Join).Remote(std::string("env"));
  EXPECT_EQ(prism::Get(a, 30s), 0);
  EXPECT_EQ(prism::Get(b, 30s), 1);
  for (int r = 0; r < 2; ++r) {
    auto env = prism::Get(m[r].Task(&Member::Env).Remote());
    EXPECT_EQ(env[0], std::to_string(r));
    EXPECT_EQ(env[1], "2");
    EXPECT_EQ(env[2], std::to_string(r));
    EXPECT_EQ(env[3], "127.0.0.1");
    EXPECT_GT(std::atoi(env[4].c_str()), 0);
  }
  EXPECT_EQ(prism::Get(m[0].Task(&Member::Env).Remote())[4],
            prism::Get(m[1].Task(&Member::Env).Remote())[4]);
}

TEST_F(GlooTest, RanksCanDeclareTheGroupThemselves) {
  auto m = Members(3);
  std::vector<prism::ObjectRef<int>> joins;
  for (int r = 0; r < 3; ++r)
    joins.push_back(m[r].Task(&Member::JoinAs).Remote(std::string("self"), 3, r));
  for (int r = 0; r < 3; ++r) EXPECT_EQ(prism::Get(joins[r], 30s), r);
  Check(m, "self", kAllReduce, DType::kFloat32, ReduceOp::kSum, 100);
  auto other = prism::Actor(MakeMember).Remote();
  EXPECT_THROW(prism::Get(other.Task(&Member::JoinAs).Remote(std::string("self"), 4, 3), 30s),
               prism::TaskError)
      << "a rank that disagrees on the size";
}

TEST_F(GlooTest, BadInputIsAClearError) {
  auto m = Members(2);
  EXPECT_THROW(
      col::CreateGroup(std::vector<prism::ActorHandle<Member>>{}, col::Backend::kGloo, "empty"),
      prism::InvalidArgumentError);
  EXPECT_THROW(col::CreateGroup(m, col::Backend::kGloo, "bad name!"), prism::InvalidArgumentError);
  EXPECT_THROW(col::CreateGroup(std::vector<prism::ActorHandle<Member>>{m[0], m[0]},
                                col::Backend::kGloo, "twice"),
               prism::InvalidArgumentError);
  col::CreateGroup(m, col::Backend::kGloo, "bad");
  EXPECT_THROW(col::CreateGroup(m, col::Backend::kGloo, "bad"), prism::InvalidArgumentError)
      << "the name is taken";
  EXPECT_THROW(col::GetGroup("bad"), prism::InvalidArgumentError) << "the driver is not a member";
  EXPECT_THROW(col::GetGroup("nowhere"), prism::InvalidArgumentError);
  auto a = m[0].Task(&Member::TryBadInput).Remote(std::string("bad"));
  auto b = m[1].Task(&Member::TryBadInput).Remote(std::string("bad"));
  std::string said = prism::Get(a, 30s);
  EXPECT_NE(said.find("uint8"), std::string::npos) << said;
  EXPECT_NE(said.find("root 2"), std::string::npos) << said;
  prism::Get(b, 30s);
  // The group still works after its callers' mistakes.
  Check(m, "bad", kAllReduce, DType::kInt64, ReduceOp::kMax, 5);
}

TEST_F(GlooTest, ARankThatNeverJoinsIsAnErrorWithinTheTimeout) {
  auto m = Members(3);
  col::CreateGroup(m, col::Backend::kGloo, "absent", {.timeout = 1500ms});
  auto t0 = std::chrono::steady_clock::now();
  auto a = m[0].Task(&Member::TryJoin).Remote(std::string("absent"));
  auto b = m[1].Task(&Member::TryJoin).Remote(std::string("absent"));
  for (auto& ref : {a, b}) {
    std::string said = prism::Get(ref, 30s);
    EXPECT_NE(said.find("collective group 'absent'"), std::string::npos) << said;
    EXPECT_NE(said.find("rank 2 did not join"), std::string::npos) << said;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
}

TEST_F(GlooTest, ARankKilledMidAllreduceFailsTheOthersAndTheGroupCanBeCreatedAgain) {
  auto m = Members(3);
  col::CreateGroup(m, col::Backend::kGloo, "fragile", {.timeout = 3s});
  std::vector<prism::ObjectRef<int>> joins;
  for (auto& a : m) joins.push_back(a.Task(&Member::Join).Remote(std::string("fragile")));
  for (auto& j : joins) prism::Get(j, 30s);
  int victim = prism::Get(m[2].Task(&Member::Pid).Remote());
  auto t0 = std::chrono::steady_clock::now();
  auto a = m[0].Task(&Member::TryAllReduce).Remote(std::string("fragile"), 1 << 20);
  auto b = m[1].Task(&Member::TryAllReduce).Remote(std::string("fragile"), 1 << 20);
  std::this_thread::sleep_for(300ms);  // both are in the allreduce, waiting for rank 2
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  for (auto& ref : {a, b}) {
    std::string said = prism::Get(ref, 30s);
    EXPECT_NE(said.find("collective group 'fragile'"), std::string::npos) << said;
    EXPECT_NE(said.find("rank 2"), std::string::npos) << said;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s) << "errors within the timeout, not a hang";
  // Broken now; destroyed and created again with a new member in the dead one's place.
  EXPECT_NE(
      prism::Get(m[0].Task(&Member::TryAllReduce).Remote(std::string("fragile"), 4)).find("broken"),
      std::string::npos);
  col::DestroyGroup("fragile");
  prism::Get(m[0].Task(&Member::Leave).Remote(std::string("fragile")));
  // (m[1] does not leave: its broken membership gives way to the new group when it next asks.)
  std::vector<prism::ActorHandle<Member>> again{m[0], m[1], prism::Actor(MakeMember).Remote()};
  col::CreateGroup(again, col::Backend::kGloo, "fragile", {.timeout = 10s});
  Check(again, "fragile", kAllReduce, DType::kFloat32, ReduceOp::kSum, 1000);
}

// A rank that lives but does not come to a collective: the others fail within the timeout, naming
// it.
TEST_F(GlooTest, ARankThatStallsIsNamedWithinTheTimeout) {
  auto m = Members(3);
  col::CreateGroup(m, col::Backend::kGloo, "stall", {.timeout = 2s});
  std::vector<prism::ObjectRef<int>> joins;
  for (auto& a : m) joins.push_back(a.Task(&Member::Join).Remote(std::string("stall")));
  for (auto& j : joins) prism::Get(j, 30s);
  auto t0 = std::chrono::steady_clock::now();
  auto a = m[0].Task(&Member::TryAllReduce).Remote(std::string("stall"), 1000);
  auto b = m[1].Task(&Member::TryAllReduce).Remote(std::string("stall"), 1000);
  for (auto& ref : {a, b}) {
    std::string said = prism::Get(ref, 30s);
    EXPECT_NE(said.find("collective group 'stall'"), std::string::npos) << said;
    EXPECT_NE(said.find("rank 2 did not take part"), std::string::npos) << said;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
}

// Subgroups, as ncclCommSplit makes them: by color, ranked by key then parent rank.
TEST_F(GlooTest, SplitFormsSubgroupsByColorAndKey) {
  auto m = Members(4);
  col::CreateGroup(m, col::Backend::kGloo, "whole", {.timeout = 10s});
  auto split = [&](const std::string& name, std::vector<int> colors, std::vector<int> keys) {
    std::vector<prism::ObjectRef<std::string>> refs;
    for (int r = 0; r < 4; ++r) {
      if (colors[r] == -2) continue;  // this rank does not come
      refs.push_back(
          m[r].Task(&Member::Split).Remote(std::string("whole"), name, colors[r], keys[r]));
    }
    std::vector<std::string> out;
    for (auto& ref : refs) out.push_back(prism::Get(ref, 60s));
    return out;
  };
  std::vector<prism::ObjectRef<int>> joins;
  for (auto& a : m) joins.push_back(a.Task(&Member::Join).Remote(std::string("whole")));
  for (auto& j : joins) prism::Get(j, 30s);
  // Even and odd ranks, each ordered by descending parent rank.
  auto halves = split("half", {0, 1, 0, 1}, {0, -1, -2, -3});
  EXPECT_EQ(halves, (std::vector<std::string>{"1/2 sum 2", "1/2 sum 4", "0/2 sum 2", "0/2 sum 4"}));
  // Three ranks together (equal keys: by parent rank); the fourth in none.
  auto three = split("three", {5, 5, 5, col::kNoColor}, {0, 0, 0, 0});
  EXPECT_EQ(three, (std::vector<std::string>{"0/3 sum 3", "1/3 sum 3", "2/3 sum 3", "none"}));
  // The parent still works, and a name in use is refused on the rank that has it.
  Check(m, "whole", kAllReduce, DType::kFloat32, ReduceOp::kSum, 33);
  std::string again = prism::Get(
      m[0].Task(&Member::Split).Remote(std::string("whole"), std::string("half"), 0, 0), 30s);
  EXPECT_NE(again.find("'half' is in use"), std::string::npos) << again;
  std::string unknown = prism::Get(
      m[0].Task(&Member::Split).Remote(std::string("nowhere"), std::string("x"), 0, 0), 30s);
  EXPECT_NE(unknown.find("not a member of collective group 'nowhere'"), std::string::npos)
      << unknown;
  std::string color = prism::Get(
      m[0].Task(&Member::Split).Remote(std::string("whole"), std::string("y"), -7, 0), 30s);
  EXPECT_NE(color.find("color"), std::string::npos) << color;
  // The refused split counted on rank 0 only: the group splits no more, on any rank.
  std::string after = prism::Get(
      m[0].Task(&Member::Split).Remote(std::string("whole"), std::string("z"), 0, 0), 30s);
  EXPECT_NE(after.find("an earlier split of it failed"), std::string::npos) << after;
  std::string other = prism::Get(
      m[1].Task(&Member::Split).Remote(std::string("whole"), std::string("half2"), 0, 0), 30s);
  EXPECT_NE(other.find("failed on another rank"), std::string::npos) << other;
  col::DestroyGroup("whole");
  for (auto& a : m) prism::Get(a.Task(&Member::Leave).Remote(std::string("whole")));
}

TEST_F(GlooTest, ARankThatDoesNotComeToASplitIsNamed) {
  auto m = Members(3);
  col::CreateGroup(m, col::Backend::kGloo, "splitter", {.timeout = 1500ms});
  std::vector<prism::ObjectRef<int>> joins;
  for (auto& a : m) joins.push_back(a.Task(&Member::Join).Remote(std::string("splitter")));
  for (auto& j : joins) prism::Get(j, 30s);
  auto t0 = std::chrono::steady_clock::now();
  auto a = m[0].Task(&Member::Split).Remote(std::string("splitter"), std::string("part"), 0, 0);
  auto b = m[1].Task(&Member::Split).Remote(std::string("splitter"), std::string("part"), 0, 0);
  for (auto& ref : {a, b}) {
    std::string said = prism::Get(ref, 30s);
    EXPECT_NE(said.find("collective group 'splitter'"), std::string::npos) << said;
    EXPECT_NE(said.find("rank 2 did not come"), std::string::npos) << said;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  // Coming late, rank 2 is told, rather than reading the others' stale choices.
  std::string late = prism::Get(
      m[2].Task(&Member::Split).Remote(std::string("splitter"), std::string("part"), 0, 0), 30s);
  EXPECT_NE(late.find("failed on another rank"), std::string::npos) << late;
}

// The workers of a placement group: actors in its bundles, one rank each.
TEST_F(GlooTest, ActorsInAPlacementGroupsBundlesFormAGroup) {
  auto pg = prism::CreatePlacementGroup({.bundles = {{{"CPU", 1}}, {{"CPU", 1}}, {{"CPU", 1}}}});
  ASSERT_TRUE(pg.Wait(30s));
  std::vector<prism::ActorHandle<Member>> m;
  for (int i = 0; i < 3; ++i) {
    m.push_back(
        prism::Actor(MakeMember)
            .Options({.num_cpus = 1, .placement_group = pg, .placement_group_bundle_index = i})
            .Remote());
  }
  col::CreateGroup(m, col::Backend::kGloo, "bundles");
  Check(m, "bundles", kAllReduce, DType::kFloat64, ReduceOp::kSum, 257);
  Check(m, "bundles", kAllGather, DType::kInt32, ReduceOp::kSum, 31);
  col::DestroyGroup("bundles");
  for (auto& a : m) prism::Kill(a);
  prism::RemovePlacementGroup(pg);
}

}  // namespace
