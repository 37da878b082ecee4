// ByteStream: one end of a byte stream — a pipe end, a FIFO, a connected UNIX
// or TCP stream socket — read and written with blocking, try_ and timed calls.
//
// Every call says how long it may wait:
//   read_some(buffer)                   as long as it takes
//   try_read_some(buffer)               not at all: errc::would_block
//   read_some_for(buffer, 50ms)         up to a timeout: errc::timed_out
//   read_some_until(buffer, deadline)   the same with a deadline (ferry/os/clock.hpp)
//
// End of stream: read_some returns 0 once every writer has closed and every
// byte was read. read_exact reports it as errc::peer_gone, naming how many of
// the bytes it wanted had arrived.
//
// No SIGPIPE death: writing when every reader is gone returns errc::peer_gone,
// and the process's SIGPIPE disposition is left as it is (default: terminate).
// Sockets write with MSG_NOSIGNAL; pipes and FIFOs with pwritev2's
// RWF_NOSIGNAL (Linux 6.18+), or on older kernels with SIGPIPE blocked in
// the calling thread around write() and the SIGPIPE that write raised discarded.
//
// Why there is no try_write_all: a stream may take part of the bytes, and a
// call that then stopped would leave a message half-written. Use
// try_write_some and keep the rest, or FramedStream::try_send_frame, which
// keeps it for you. A timed write_all or read_exact that runs out of time
// half-way returns errc::timed_out naming how many bytes moved; the stream is
// then in the middle of a message and is best closed.
//
// The descriptor is switched to O_NONBLOCK (a flag of the open file
// description, so duplicates of it see it too); blocking calls wait in ppoll.
//
// Thread-safety: a ByteStream holds no state but its descriptor: one thread
// may read while another writes. Two concurrent readers (or writers) may
// interleave their bytes, as with the raw descriptor.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/os/fd.hpp"

namespace ferry {

namespace detail {
/// How long a transport call may wait: not at all, until a deadline, or for ever.
struct WaitLimit {
  enum class Kind : std::uint8_t { none, until, forever };
  Kind kind = Kind::forever;
  deadline until_time{};

  static WaitLimit none() noexcept { return {Kind::none, {}}; }
  static WaitLimit forever() noexcept { return {Kind::forever, {}}; }
  static WaitLimit at(deadline when) noexcept { return {Kind::until, when}; }
  static WaitLimit after(steady_clock::duration timeout) noexcept { return at(deadline_after(timeout)); }
  /// The error for "the limit was reached": would_block or timed_out.
  [[nodiscard]] errc reached_code() const noexcept {
    return kind == Kind::none ? errc::would_block : errc::timed_out;
  }
};

/// Waits until `fd` reports one of `events` (POLLIN, POLLOUT; errors and
/// hang-ups count as ready). If the limit comes first: would_block or
/// timed_out, naming `object` and what it was `waiting_for`.
result<void> wait_ready(int fd, short events, WaitLimit limit, std::string_view object, std::string_view waiting_for);

/// The socket call flags for `limit`: MSG_DONTWAIT unless it waits forever.
/// A socket call with them is right whatever the socket's mode: one in
/// blocking mode then sleeps in the kernel only when it may wait forever
/// (one system call, as a plain blocking send), one in non-blocking mode
/// polls and calls again.
int dont_wait_unless_forever(WaitLimit limit) noexcept;

/// How pipe and FIFO writes keep SIGPIPE away: the RWF_NOSIGNAL flag of
/// pwritev2 (Linux 6.18 and later; the write alone), or SIGPIPE blocked in
/// the writing thread around writev (two more system calls). The flag is
/// used until the kernel refuses it. Tests choose, to run both ways.
enum class PipeWriteGuard : std::uint8_t { write_flag, signal_mask };
PipeWriteGuard pipe_write_guard() noexcept;
void set_pipe_write_guard(PipeWriteGuard guard) noexcept;
}  // namespace detail

class ByteStream {
 public:
  /// What the descriptor is; decides how it is written without SIGPIPE.
  enum class Kind : std::uint8_t { pipe, socket };

  ByteStream() = default;
  ByteStream(ByteStream&&) noexcept = default;
  ByteStream& operator=(ByteStream&&) noexcept = default;
  ~ByteStream() = default;

  /// Takes `fd` (a pipe, FIFO or stream socket), switching it to O_NONBLOCK.
  /// invalid_argument if it is none of those; `name` names it in errors.
  static result<ByteStream> wrap(Fd fd, std::string_view name);
  /// Takes a descriptor number inherited across fork/exec (see
  /// `inheritable`): checks it is open and a stream, makes it close-on-exec.
  /// On failure the descriptor is left as it was (not closed).
  static result<ByteStream> adopt(int fd, std::string_view name);

  /// A copy of the descriptor that survives exec, numbered >= `min_fd`; pass
  /// its number to the child, which calls `adopt`. Close it after the fork.
  [[nodiscard]] result<Fd> inheritable(int min_fd = 3) const { return fd_.dup_inheritable(min_fd); }

  [[nodiscard]] const Fd& fd() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_.valid(); }
  [[nodiscard]] Kind kind() const noexcept { return kind_; }
  [[nodiscard]] const std::string& name() const noexcept;
  /// The name for errors, shared by them without copying (never null).
  [[nodiscard]] const std::shared_ptr<const std::string>& shared_name() const noexcept;
  /// Closes the descriptor; the peer sees end of stream (or peer_gone).
  void close() noexcept { fd_.reset(); }

  /// Reads what is there (at least 1 byte), or 0 at end of stream.
  result<std::size_t> read_some(std::span<std::byte> buffer) { return read_some(buffer, detail::WaitLimit::forever()); }
  result<std::size_t> try_read_some(std::span<std::byte> buffer) { return read_some(buffer, detail::WaitLimit::none()); }
  result<std::size_t> read_some_for(std::span<std::byte> buffer, steady_clock::duration timeout) {
    return read_some(buffer, detail::WaitLimit::after(timeout));
  }
  result<std::size_t> read_some_until(std::span<std::byte> buffer, deadline when) {
    return read_some(buffer, detail::WaitLimit::at(when));
  }
  result<std::size_t> read_some(std::span<std::byte> buffer, detail::WaitLimit limit);
  /// Scattered read into up to `count` pieces, filled in order; bytes read,
  /// or 0 at end of stream.
  result<std::size_t> read_vector(const iovec* pieces, int count, detail::WaitLimit limit);

  /// Fills all of `buffer`; end of stream first is peer_gone.
  result<void> read_exact(std::span<std::byte> buffer) { return read_exact(buffer, detail::WaitLimit::forever()); }
  result<void> read_exact_for(std::span<std::byte> buffer, steady_clock::duration timeout) {
    return read_exact(buffer, detail::WaitLimit::after(timeout));
  }
  result<void> read_exact_until(std::span<std::byte> buffer, deadline when) {
    return read_exact(buffer, detail::WaitLimit::at(when));
  }
  result<void> read_exact(std::span<std::byte> buffer, detail::WaitLimit limit);

  /// Writes at least 1 byte (as many as the stream takes); peer_gone without readers.
  result<std::size_t> write_some(std::span<const std::byte> bytes) { return write_some(bytes, detail::WaitLimit::forever()); }
  result<std::size_t> try_write_some(std::span<const std::byte> bytes) { return write_some(bytes, detail::WaitLimit::none()); }
  result<std::size_t> write_some_for(std::span<const std::byte> bytes, steady_clock::duration timeout) {
    return write_some(bytes, detail::WaitLimit::after(timeout));
  }
  result<std::size_t> write_some_until(std::span<const std::byte> bytes, deadline when) {
    return write_some(bytes, detail::WaitLimit::at(when));
  }
  result<std::size_t> write_some(std::span<const std::byte> bytes, detail::WaitLimit limit);

  /// Writes every byte, however many writes that takes.
  result<void> write_all(std::span<const std::byte> bytes) { return write_all(bytes, detail::WaitLimit::forever()); }
  result<void> write_all_for(std::span<const std::byte> bytes, steady_clock::duration timeout) {
    return write_all(bytes, detail::WaitLimit::after(timeout));
  }
  result<void> write_all_until(std::span<const std::byte> bytes, deadline when) {
    return write_all(bytes, detail::WaitLimit::at(when));
  }
  result<void> write_all(std::span<const std::byte> bytes, detail::WaitLimit limit);

  /// Gathered write of up to `count` pieces (for framing: header and payload
  /// in one call); bytes written, at least 1.
  result<std::size_t> write_vector(const iovec* pieces, int count, detail::WaitLimit limit);

 protected:
  ByteStream(Fd fd, Kind kind, std::shared_ptr<const std::string> name) noexcept
      : fd_(std::move(fd)), kind_(kind), name_(std::move(name)) {}

 private:
  Fd fd_;
  Kind kind_ = Kind::pipe;
  std::shared_ptr<const std::string> name_;
};

}  // namespace ferry
