// Files for locking: open a path, and open-file-description (OFD) locks.
//
// OFD locks (F_OFD_SETLK) belong to the open file description, not to the
// process: two FileLock objects in one process conflict as two processes
// would, closing an unrelated descriptor of the same file releases nothing,
// and the kernel releases the lock when the last descriptor closes — also
// when the process dies.
#pragma once

#include <sys/types.h>

#include <string_view>

#include "ferry/os/error.hpp"
#include "ferry/os/fd.hpp"

namespace ferry {

/// Opens (and with `create`, creates with exactly `mode`) a regular file for locking.
result<Fd> open_lock_file(std::string_view path, bool create, mode_t mode);

enum class FileLockKind : std::uint8_t { shared, exclusive };

/// Takes an OFD lock on the whole file. With `wait`, blocks until granted;
/// without, returns false if another holder conflicts.
result<bool> ofd_lock(const Fd& file, FileLockKind kind, bool wait, std::string_view object);
/// Releases this descriptor's OFD lock.
result<void> ofd_unlock(const Fd& file, std::string_view object);

}  // namespace ferry
