// The collectives' typed suite: every rank's inputs, the operations run on a group (host or
// device buffers), and the reference each rank's result is checked against. Shared by the gloo
// suite (host memory) and the device suite (sim devices on gloo, CUDA devices on nccl).
#pragma once

#include <gtest/gtest.h>
#include <prism/collective.h>
#include <prism/gpu/float16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "collectives/internal.h"

namespace suite {

namespace col = prism::collective;
using col::DType;
using col::ReduceOp;

enum Op { kAllReduce, kAllGather, kReduceScatter, kBroadcast, kReduce, kSendRecv, kBatchRing };

// Rank r's i-th input: small integers (exact in every dtype); {1, 2, -1} for products, so a
// product over 8 ranks stays exact in float16 and bfloat16.
inline double Input(int rank, size_t i, ReduceOp op) {
  if (op == ReduceOp::kProd) {
    static const double kChoices[] = {1, 2, -1, 1, 1, 2};
    return kChoices[(rank * 5 + i * 3) % 6];
  }
  return static_cast<double>((rank * 7 + static_cast<int>(i) * 13 + 3) % 11) - 5;
}

inline std::vector<uint8_t> Encode(const std::vector<double>& v, DType dtype) {
  std::vector<uint8_t> out(v.size() * col::internal::ElementSize(dtype));
  for (size_t i = 0; i < v.size(); ++i) {
    switch (dtype) {
      case DType::kFloat16:
        reinterpret_cast<uint16_t*>(out.data())[i] = prism::gpu::FloatToHalf(float(v[i]));
        break;
      case DType::kBFloat16:
        reinterpret_cast<uint16_t*>(out.data())[i] = prism::gpu::FloatToBFloat16(float(v[i]));
        break;
      case DType::kFloat32:
        reinterpret_cast<float*>(out.data())[i] = float(v[i]);
        break;
      case DType::kFloat64:
        reinterpret_cast<double*>(out.data())[i] = v[i];
        break;
      case DType::kInt32:
        reinterpret_cast<int32_t*>(out.data())[i] = int32_t(v[i]);
        break;
      case DType::kUInt8:
        out[i] = static_cast<uint8_t>(static_cast<int8_t>(v[i]));
        break;  // (read back signed)
      default:
        reinterpret_cast<int64_t*>(out.data())[i] = int64_t(v[i]);
        break;
    }
  }
  return out;
}

inline std::vector<double> Decode(const std::vector<uint8_t>& b, DType dtype) {
  size_t n = b.size() / col::internal::ElementSize(dtype);
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    switch (dtype) {
      case DType::kFloat16:
        out[i] = prism::gpu::HalfToFloat(reinterpret_cast<const uint16_t*>(b.data())[i]);
        break;
      case DType::kBFloat16:
        out[i] = prism::gpu::BFloat16ToFloat(reinterpret_cast<const uint16_t*>(b.data())[i]);
        break;
      case DType::kFloat32:
        out[i] = reinterpret_cast<const float*>(b.data())[i];
        break;
      case DType::kFloat64:
        out[i] = reinterpret_cast<const double*>(b.data())[i];
        break;
      case DType::kInt32:
        out[i] = reinterpret_cast<const int32_t*>(b.data())[i];
        break;
      case DType::kUInt8:
        out[i] = static_cast<int8_t>(b[i]);
        break;
      default:
        out[i] = double(reinterpret_cast<const int64_t*>(b.data())[i]);
        break;
    }
  }
  return out;
}

inline const DType kDTypes[] = {DType::kFloat16, DType::kBFloat16, DType::kFloat32,
                                DType::kFloat64, DType::kInt32,    DType::kInt64};
inline const ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kProd, ReduceOp::kMin, ReduceOp::kMax,
                                ReduceOp::kAvg};

// The reference: what rank `rank` must get, computed from every rank's inputs here.
inline std::vector<double> Expected(int op, DType dtype, ReduceOp reduce, int count, int n,
                                    int rank, int root) {
  auto combine = [&](size_t i, size_t offset) {
    double acc = Input(0, offset + i, reduce);
    for (int r = 1; r < n; ++r) {
      double v = Input(r, offset + i, reduce);
      switch (reduce) {
        case ReduceOp::kProd:
          acc *= v;
          break;
        case ReduceOp::kMin:
          acc = std::min(acc, v);
          break;
        case ReduceOp::kMax:
          acc = std::max(acc, v);
          break;
        default:
          acc += v;
          break;
      }
    }
    if (reduce == ReduceOp::kAvg) {
      bool integer = dtype == DType::kInt32 || dtype == DType::kInt64;
      acc = integer ? std::trunc(acc / n) : acc / n;
    }
    return acc;
  };
  std::vector<double> out;
  switch (op) {
    case kAllReduce:
      for (int i = 0; i < count; ++i) out.push_back(combine(i, 0));
      break;
    case kAllGather:
      for (int r = 0; r < n; ++r)
        for (int i = 0; i < count; ++i) out.push_back(Input(r, i, reduce));
      break;
    case kReduceScatter:
      for (int i = 0; i < count; ++i) out.push_back(combine(i, size_t(rank) * count));
      break;
    case kBroadcast:
      for (int i = 0; i < count; ++i) out.push_back(Input(root, i, reduce));
      break;
    case kReduce:
      if (rank == root)
        for (int i = 0; i < count; ++i) out.push_back(combine(i, 0));
      break;
    case kSendRecv:
    case kBatchRing:
      for (int i = 0; i < count; ++i) out.push_back(Input((rank + n - 1) % n, i, reduce));
      break;
  }
  return out;
}

inline double Tolerance(DType dtype) {
  return dtype == DType::kFloat16    ? 1e-3
         : dtype == DType::kBFloat16 ? 1e-2
         : dtype == DType::kFloat32  ? 1e-6
                                     : 0;
}

// What a rank sends, and its receive buffer as it must be before the operation (broadcast works
// in place on a copy of the input).
struct Plan {
  std::vector<uint8_t> send;
  std::vector<uint8_t> initial_recv;
};

inline Plan MakePlan(const col::Group& g, int op, DType dtype, ReduceOp reduce, int count) {
  int n = g.size(), r = g.rank();
  size_t in_count = op == kReduceScatter ? size_t(count) * n : size_t(count);
  std::vector<double> in(in_count);
  for (size_t i = 0; i < in_count; ++i) in[i] = Input(r, i, reduce);
  Plan p;
  p.send = Encode(in, dtype);
  size_t es = col::internal::ElementSize(dtype);
  p.initial_recv.assign(op == kAllGather ? count * es * n : count * es, 0);
  if (op == kBroadcast) p.initial_recv = p.send;
  return p;
}

// Runs `op` with `send` and `recv` (host memory, or device memory on `stream`).
inline void Apply(col::Group& g, int op, DType dtype, ReduceOp reduce, int count, int root,
                  const void* send, void* recv, prism::gpu::Stream* stream) {
  int n = g.size(), r = g.rank();
  switch (op) {
    case kAllReduce:
      g.AllReduce(send, recv, count, dtype, reduce, stream);
      break;
    case kAllGather:
      g.AllGather(send, recv, count, dtype, stream);
      break;
    case kReduceScatter:
      g.ReduceScatter(send, recv, count, dtype, reduce, stream);
      break;
    case kBroadcast:
      g.Broadcast(recv, count, dtype, root, stream);
      break;
    case kReduce:
      g.Reduce(send, recv, count, dtype, reduce, root, stream);
      break;
    case kSendRecv: {  // a ring: even ranks send first, odd ones receive first
      if (n == 1) break;
      int next = (r + 1) % n, prev = (r + n - 1) % n;
      if (r % 2 == 0) {
        g.Send(send, count, dtype, next, stream);
        g.Recv(recv, count, dtype, prev, stream);
      } else {
        g.Recv(recv, count, dtype, prev, stream);
        g.Send(send, count, dtype, next, stream);
      }
      break;
    }
    case kBatchRing: {  // every rank sends first, in one batch with its receive
      if (n == 1) break;
      g.SendRecv({col::P2POp::Send(send, count, dtype, (r + 1) % n),
                  col::P2POp::Recv(recv, count, dtype, (r + n - 1) % n)},
                 stream);
      break;
    }
  }
}

// What the rank got, as doubles (nothing for reduce off the root; a 1-rank "ring" keeps its input).
inline std::vector<double> Outcome(const col::Group& g, int op, int root, std::vector<uint8_t> recv,
                                   DType dtype, const std::vector<uint8_t>& send = {}) {
  if (op == kReduce && g.rank() != root) recv.clear();
  if ((op == kSendRecv || op == kBatchRing) && g.size() == 1) recv = send;
  return Decode(recv, dtype);
}

// Each rank's result (got[r]) against the reference.
inline void ExpectReference(const std::vector<std::vector<double>>& got, int op, DType dtype,
                            ReduceOp reduce, int count, int root) {
  int n = static_cast<int>(got.size());
  for (int r = 0; r < n; ++r) {
    std::vector<double> want = Expected(op, dtype, reduce, count, n, r, root);
    ASSERT_EQ(got[r].size(), want.size()) << "op " << op << " rank " << r;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[r][i], want[i], Tolerance(dtype) * std::max(1.0, std::abs(want[i])))
          << "op " << op << " dtype " << prism::gpu::DTypeName(dtype) << " reduce " << int(reduce)
          << " count " << count << " ranks " << n << " rank " << r << " element " << i;
    }
  }
}

// The suite's cases for a group of n ranks: every operation, dtype and reduce op at 1, 7 and 1009
// elements; check(op, dtype, reduce, count, root) for each (no send/recv ring on one rank).
template <typename F>
void EveryCase(int n, F check) {
  for (DType dtype : kDTypes) {
    for (int count : {1, 7, 1009}) {
      for (ReduceOp reduce : kOps) {
        check(kAllReduce, dtype, reduce, count, 0);
        check(kReduceScatter, dtype, reduce, count, 0);
        check(kReduce, dtype, reduce, count, n - 1);
      }
      check(kAllGather, dtype, ReduceOp::kSum, count, 0);
      check(kBroadcast, dtype, ReduceOp::kSum, count, n > 1 ? 1 : 0);
      if (n > 1) check(kSendRecv, dtype, ReduceOp::kSum, count, 0);
      if (n > 1) check(kBatchRing, dtype, ReduceOp::kSum, count, 0);
    }
  }
  // uint8, for the operations that only move data.
  check(kAllGather, DType::kUInt8, ReduceOp::kSum, 1009, 0);
  check(kBroadcast, DType::kUInt8, ReduceOp::kSum, 7, n - 1);
  if (n > 1) check(kBatchRing, DType::kUInt8, ReduceOp::kSum, 1009, 0);
  // A ring in which every rank sends first, large enough not to fit in a transport's buffers.
  if (n > 1) check(kBatchRing, DType::kFloat32, ReduceOp::kSum, 2 << 20, 0);
}

}  // namespace suite
