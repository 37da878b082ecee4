// Not API: the calling thread's identity, cached per thread so that the
// inline lock paths ask for it without a system call or a function call.
// getpid() and gettid() are real system calls (~90 ns here). In a forked
// child only the forking thread exists, and a pthread_atfork handler clears
// its cache there, so the child recomputes its own identity.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>

namespace ferry::detail {

struct ThreadIdentity {
  std::uint64_t process;  // packed ProcessId; 0 = not computed yet
  pid_t tid;
};

// initial-exec: a plain %fs-relative access, not a __tls_get_addr call.
// constinit: no dynamic initialisation, so no TLS wrapper call on access.
extern thread_local constinit ThreadIdentity tls_identity __attribute__((tls_model("initial-exec")));
const ThreadIdentity& refresh_identity() noexcept;

inline const ThreadIdentity& this_thread_identity() noexcept {
  if (tls_identity.process != 0) [[likely]] return tls_identity;
  return refresh_identity();
}

}  // namespace ferry::detail
