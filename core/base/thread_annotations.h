// Clang's thread-safety annotations (as leveldb uses them); empty under other compilers.
#pragma once

#if defined(__clang__)
#define PRISM_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define PRISM_THREAD_ANNOTATION(x)
#endif

/// The member is read and written only with `mu` held.
#define PRISM_GUARDED_BY(mu) PRISM_THREAD_ANNOTATION(guarded_by(mu))
/// The function must be called with `mu` held.
#define PRISM_REQUIRES(mu) PRISM_THREAD_ANNOTATION(requires_capability(mu))
