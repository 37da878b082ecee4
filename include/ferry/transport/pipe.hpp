// Pipe: an anonymous pipe, one read end and one write end (ByteStreams).
//
//   auto pipe = ferry::Pipe::create();
//   pipe->writer.write_all(bytes);            // peer_gone once every reader closed
//   pipe->reader.read_some(buffer);           // 0 once every writer closed
//
// Handing an end to a child across fork/exec: every ferry descriptor is
// close-on-exec, so the child inherits only what is passed on purpose:
//
//   auto inherited = pipe->writer.inheritable();   // a copy without O_CLOEXEC
//   // fork; the child execs with std::to_string(inherited->get()) in argv
//   // and calls ferry::Pipe::adopt_writer(number)
//   inherited->reset();                            // parent: close its copy
//   pipe->writer.close();                          // so EOF comes when the child is done
//
// Thread-safety: as ByteStream.
#pragma once

#include <string_view>

#include "ferry/os/error.hpp"
#include "ferry/transport/stream.hpp"

namespace ferry {

struct Pipe {
  ByteStream reader;
  ByteStream writer;

  /// A new pipe (pipe2 with O_CLOEXEC | O_NONBLOCK).
  static result<Pipe> create();
  /// Takes the read or write end inherited as descriptor `fd`; invalid_argument
  /// if that descriptor is not open, not a pipe, or open the other way round.
  static result<ByteStream> adopt_reader(int fd);
  static result<ByteStream> adopt_writer(int fd);
};

}  // namespace ferry
