// What the cluster benchmarks compare against: a gRPC unary round trip to a node's service, on the
// same authenticated kind of connection that calls between nodes use.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cluster.grpc.pb.h"
#include "rpc/grpc_channel.h"

namespace prism::bench {

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Microseconds per `NodeService.Ping` to the node at `address`: the median of `rounds` rounds
/// of 1000 calls. Exits with why if the node does not answer.
inline double GrpcUnaryRoundTripUs(const std::string& address, const std::string& token,
                                   int rounds) {
  using Clock = std::chrono::steady_clock;
  rpc::ClusterChannel channel(address, token);
  auto connected = channel.Get(std::chrono::seconds(5));
  if (!connected.ok()) {
    std::fprintf(stderr, "cannot reach %s: %s\n", address.c_str(),
                 connected.status().ToString().c_str());
    std::exit(1);
  }
  auto stub = rpc::NodeService::NewStub(*connected);
  std::vector<double> us;
  for (int r = 0; r < rounds; ++r) {
    auto t0 = Clock::now();
    for (int i = 0; i < 1000; ++i) {
      grpc::ClientContext ctx;
      rpc::PingReply pong;
      grpc::Status st = stub->Ping(&ctx, rpc::PingRequest(), &pong);
      if (!st.ok()) {
        std::fprintf(stderr, "Ping to %s failed: %s\n", address.c_str(),
                     st.error_message().c_str());
        std::exit(1);
      }
    }
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / 1000);
  }
  return Median(us);
}

}  // namespace prism::bench
