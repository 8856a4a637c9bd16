// Status and Result<T> are public (GPU tasks and backends return them); the runtime includes
// them from here.
#pragma once

#include <prism/status.h>
