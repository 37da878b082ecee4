// Fifo: a named pipe in the file system, opened for reading or writing as a
// ByteStream.
//
//   ferry::Fifo::create("/run/app/feed", 0600);
//   auto reader = ferry::Fifo::try_open_reader("/run/app/feed");   // at once
//   auto writer = ferry::Fifo::open_writer_for("/run/app/feed", 1s);
//
// Opening follows POSIX FIFO rules, made explicit:
//   - open_reader waits until a writer opens (the classic blocking open).
//     try_open_reader returns at once; its reads then wait (or say
//     would_block) until a writer has written, and report end of stream (0)
//     only after a writer came and went — never just because none came yet.
//     A reader needs no timed open: open with try_ and read with _for/_until.
//   - open_writer waits until a reader has the FIFO open. try_open_writer
//     with no reader fails with errc::would_block (the kernel's ENXIO, kept
//     as sys_errno): a reader may come later, so it is "not now", not
//     peer_gone. open_writer_for/until retry that until the deadline, then
//     errc::timed_out (the kernel offers no way to wait for a reader with a
//     timeout, so they poll, backing off from 1 ms to 20 ms).
//   - Writing after every reader closed is errc::peer_gone, never SIGPIPE.
//
// Access: created with exactly `mode` (the umask does not apply) and O_EXCL
// semantics: an existing path is errc::already_exists.
//
// Thread-safety: the static functions may be called from any thread.
#pragma once

#include <sys/types.h>

#include <string_view>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/transport/stream.hpp"

namespace ferry {

class Fifo {
 public:
  /// Makes the FIFO at `path` with exactly `mode`.
  static result<void> create(std::string_view path, mode_t mode = 0600);
  /// Removes the FIFO at `path` (not_found if there is none; invalid_argument
  /// if the path is something other than a FIFO).
  static result<void> remove(std::string_view path);

  static result<ByteStream> open_reader(std::string_view path);
  static result<ByteStream> try_open_reader(std::string_view path);

  static result<ByteStream> open_writer(std::string_view path);
  static result<ByteStream> try_open_writer(std::string_view path);
  static result<ByteStream> open_writer_for(std::string_view path, steady_clock::duration timeout) {
    return open_writer_until(path, deadline_after(timeout));
  }
  static result<ByteStream> open_writer_until(std::string_view path, deadline when);
};

}  // namespace ferry
