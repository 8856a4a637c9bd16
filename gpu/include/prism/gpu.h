// prism's GPU layer in one include: device backends, GPU task contexts, the op library,
// topology and NVTX profiling.
#pragma once

#include <prism/gpu/backend.h>
#include <prism/gpu/context.h>
#include <prism/gpu/ops.h>
#include <prism/gpu/profiling.h>
#include <prism/gpu/tensor.h>
#include <prism/gpu/topology.h>
