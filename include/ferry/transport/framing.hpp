// FramedStream: whole messages ("frames") over any ByteStream — pipe, FIFO,
// UNIX or TCP stream socket.
//
//   ferry::FramedStream framed(std::move(*socket), {.max_frame = 1 << 20});
//   framed.send_frame(bytes);
//   auto frame = framed.receive_frame_for(1s);   // a std::vector<std::byte>
//
// Wire format: an 8-byte header, then the payload.
//
//    0        1        2        3        4        5        6        7
//   +--------+--------+--------+--------+--------+--------+--------+--------+
//   | magic  |version | reserved (0)    | payload length, little-endian u32 |
//   | 0xF7   |  0x01  |                 |                                   |
//   +--------+--------+--------+--------+--------+--------+--------+--------+
//
// A peer is not trusted. A header with another magic, version or non-zero
// reserved bytes is errc::corrupt; a length above `max_frame` is
// errc::limit_reached naming both sizes. Either way the stream is out of step
// for good: every later receive says corrupt, and the caller should close the
// connection. Memory for a frame grows with the bytes that actually arrived
// (never beyond max_frame), so a peer that announces a large frame and sends
// nothing costs nothing; after a large frame, the next header is read together
// with up to as many bytes as that frame had (at most 1 MiB) straight into the
// next frame's buffer, so large frames cost one read each and no extra copy.
//
// Receiving: a try_ or timed receive that stops in the middle of a frame
// keeps what arrived; the next call goes on from there. End of stream between
// frames is errc::peer_gone ("end of stream"); inside a frame it is peer_gone
// naming how much of the frame came: a partial frame is never delivered.
//
// Sending: a frame is committed once its first byte is in the stream. A try_
// or timed send that cannot start returns would_block / timed_out and sent
// nothing. One that started but could not finish keeps the unsent rest (a
// copy, at most one frame) and returns success; the rest goes out first on
// the next send or flush (pending_bytes() says how much is waiting). A
// frame larger than max_frame is invalid_argument and nothing is sent.
//
// Thread-safety: one thread may send while another receives; two senders
// (or two receivers) need external locking.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "ferry/os/clock.hpp"
#include "ferry/os/error.hpp"
#include "ferry/transport/stream.hpp"

namespace ferry {

namespace detail {
/// Leaves bytes uninitialized when a vector grows: a frame's buffer is
/// always overwritten by the bytes read into it, so zero-filling it first
/// would only cost a pass over memory (16 MiB frames: about a millisecond).
template <class T>
struct UninitializedAllocator : std::allocator<T> {
  UninitializedAllocator() noexcept = default;
  template <class U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}  // NOLINT: rebinding is implicit
  template <class U>
  void construct(U* where) noexcept {
    ::new (static_cast<void*>(where)) U;
  }
  template <class U, class... Args>
  void construct(U* where, Args&&... args) {
    ::new (static_cast<void*>(where)) U(std::forward<Args>(args)...);
  }
};
}  // namespace detail

/// A frame's payload: a vector of bytes (grown without zero-filling).
using Frame = std::vector<std::byte, detail::UninitializedAllocator<std::byte>>;

struct FrameOptions {
  /// The largest payload sent or accepted (at most 4 GiB - 1).
  std::size_t max_frame = std::size_t{1} << 20;
};

inline constexpr std::size_t kFrameHeaderSize = 8;
inline constexpr std::uint8_t kFrameMagic = 0xF7;
inline constexpr std::uint8_t kFrameVersion = 1;

/// The header for a payload of `size` bytes (for tests and foreign writers).
std::array<std::byte, kFrameHeaderSize> frame_header(std::uint32_t size) noexcept;

class FramedStream {
 public:
  FramedStream() = default;
  explicit FramedStream(ByteStream stream, FrameOptions options = {}) noexcept
      : stream_(std::move(stream)), options_(options) {}

  result<void> send_frame(std::span<const std::byte> payload) { return send_frame(payload, detail::WaitLimit::forever()); }
  result<void> try_send_frame(std::span<const std::byte> payload) { return send_frame(payload, detail::WaitLimit::none()); }
  result<void> send_frame_for(std::span<const std::byte> payload, steady_clock::duration timeout) {
    return send_frame(payload, detail::WaitLimit::after(timeout));
  }
  result<void> send_frame_until(std::span<const std::byte> payload, deadline when) {
    return send_frame(payload, detail::WaitLimit::at(when));
  }
  result<void> send_frame(std::span<const std::byte> payload, detail::WaitLimit limit) {
    const std::span<const std::byte> parts[] = {payload};
    return send_frame(parts, limit);
  }
  /// One frame whose payload is `parts` one after the other, written with
  /// one gathered write (no copy into a staging buffer); at most kMaxFrameParts.
  result<void> send_frame(std::span<const std::span<const std::byte>> parts, detail::WaitLimit limit);
  static constexpr std::size_t kMaxFrameParts = 3;

  /// Writes out what an earlier try_/timed send kept.
  result<void> flush() { return flush(detail::WaitLimit::forever()); }
  result<void> try_flush() { return flush(detail::WaitLimit::none()); }
  result<void> flush_for(steady_clock::duration timeout) { return flush(detail::WaitLimit::after(timeout)); }
  result<void> flush(detail::WaitLimit limit);
  [[nodiscard]] std::size_t pending_bytes() const noexcept { return pending_.size() - pending_sent_; }

  result<Frame> receive_frame() { return receive_frame(detail::WaitLimit::forever()); }
  result<Frame> try_receive_frame() { return receive_frame(detail::WaitLimit::none()); }
  result<Frame> receive_frame_for(steady_clock::duration timeout) {
    return receive_frame(detail::WaitLimit::after(timeout));
  }
  result<Frame> receive_frame_until(deadline when) { return receive_frame(detail::WaitLimit::at(when)); }
  result<Frame> receive_frame(detail::WaitLimit limit) { return receive(limit, ReadOn::until_limit); }
  /// For an event loop that was told the stream is readable (epoll, poll):
  /// a frame read ahead, or one read now; never waits. It stops reading
  /// when a read comes back short, because the stream was then empty: it
  /// returns would_block at once (keeping what arrived) instead of making
  /// the read that finds nothing, and the loop waits for the next event.
  result<Frame> receive_ready_frame() { return receive(detail::WaitLimit::none(), ReadOn::while_filled); }

  /// True while a frame has begun to arrive but is not complete.
  [[nodiscard]] bool mid_frame() const noexcept { return header_have_ > 0 || in_payload_; }
  /// True while a large frame arrives at full speed: part of it is here and
  /// the last read brought kStreamingRead bytes or more. Its rest is then on
  /// its way (the peer's kernel is still sending it), microseconds away.
  [[nodiscard]] bool frame_streaming_in() const noexcept {
    return in_payload_ && payload_have_ < payload_size_ && last_read_bytes_ >= kStreamingRead;
  }
  static constexpr std::size_t kStreamingRead = 16 * 1024;
  /// False when the stream is known to hold nothing more right now: nothing
  /// is read ahead and the last read took less than it could have. (An event
  /// loop then waits for readability instead of trying another read.)
  [[nodiscard]] bool may_have_more() const noexcept { return has_read_ahead() || last_read_filled_; }
  /// True when bytes were read ahead and not yet taken: the next frame may
  /// be complete without another read.
  [[nodiscard]] bool has_read_ahead() const noexcept { return staged_begin_ < staged_end_; }
  /// True once a bad header was seen; the stream should be closed.
  [[nodiscard]] bool broken() const noexcept { return broken_; }

  [[nodiscard]] ByteStream& stream() noexcept { return stream_; }
  [[nodiscard]] const ByteStream& stream() const noexcept { return stream_; }
  [[nodiscard]] const FrameOptions& options() const noexcept { return options_; }

 private:
  // How long receive() goes on reading: until its limit says stop, or only
  // while each read fills what it asked for.
  enum class ReadOn : std::uint8_t { until_limit, while_filled };
  result<Frame> receive(detail::WaitLimit limit, ReadOn read_on);
  result<void> parse_header();
  void take_staged_payload();
  void take_staged_header();
  result<std::size_t> read_next_header(detail::WaitLimit limit);
  void note_read(std::size_t got, std::size_t asked) noexcept {
    last_read_bytes_ = got;
    last_read_filled_ = got == asked;
  }

  ByteStream stream_;
  FrameOptions options_;

  // Sending: the unsent rest of a committed frame.
  std::vector<std::byte> pending_;
  std::size_t pending_sent_ = 0;

  // Receiving: bytes read ahead, the header so far, the payload so far.
  std::vector<std::byte> staging_;
  std::size_t staged_begin_ = 0;
  std::size_t staged_end_ = 0;
  std::array<std::byte, kFrameHeaderSize> header_{};
  std::size_t header_have_ = 0;
  bool in_payload_ = false;
  std::size_t payload_size_ = 0;
  std::size_t payload_have_ = 0;
  Frame payload_;
  // The size of the last frame when it was large: the next header is read
  // together with that much payload, straight into the next frame's buffer.
  std::size_t expect_large_ = 0;
  bool last_read_filled_ = true;
  std::size_t last_read_bytes_ = 0;
  bool broken_ = false;
};

}  // namespace ferry
