// Clang's thread-safety annotations (as leveldb and Abseil use them); empty under other
// compilers. scripts/check-thread-safety.sh runs clang's analysis over the tree (CI does): a
// guarded member touched without its mutex, or a function called without the mutex it
// requires, fails it. The mutexes they name are prism::Mutex (base/mutex.h).
#pragma once

#if defined(__clang__)
#define PRISM_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define PRISM_THREAD_ANNOTATION(x)
#endif

/// The member is read and written only with `mu` held.
#define PRISM_GUARDED_BY(mu) PRISM_THREAD_ANNOTATION(guarded_by(mu))
/// What the pointer points to is read and written only with `mu` held.
#define PRISM_PT_GUARDED_BY(mu) PRISM_THREAD_ANNOTATION(pt_guarded_by(mu))
/// The function must be called with `mu` held.
#define PRISM_REQUIRES(...) PRISM_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
/// The function must be called without `mu` held (it takes it).
#define PRISM_EXCLUDES(...) PRISM_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
/// `mu` is taken before these where both are held.
#define PRISM_ACQUIRED_BEFORE(...) PRISM_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define PRISM_ACQUIRED_AFTER(...) PRISM_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))

// For the mutex types themselves.
#define PRISM_CAPABILITY(name) PRISM_THREAD_ANNOTATION(capability(name))
#define PRISM_SCOPED_CAPABILITY PRISM_THREAD_ANNOTATION(scoped_lockable)
#define PRISM_ACQUIRE(...) PRISM_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define PRISM_RELEASE(...) PRISM_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define PRISM_TRY_ACQUIRE(...) PRISM_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#define PRISM_ASSERT_CAPABILITY(x) PRISM_THREAD_ANNOTATION(assert_capability(x))
#define PRISM_RETURN_CAPABILITY(x) PRISM_THREAD_ANNOTATION(lock_returned(x))
/// The analysis skips this function (its locking is beyond what it follows: say why).
#define PRISM_NO_THREAD_SAFETY_ANALYSIS PRISM_THREAD_ANNOTATION(no_thread_safety_analysis)
