#include "ferry/transport/framing.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

namespace ferry {

namespace {

constexpr std::size_t kStagingSize = 64 * 1024;
constexpr std::size_t kMaxWireFrame = 0xFFFF'FFFFu;

std::string frame_too_large(std::size_t size, std::size_t max) {
  return "a frame of " + std::to_string(size) + " bytes exceeds the maximum of " + std::to_string(max) + " bytes";
}

bool limit_reached(const error& failure) {
  return failure.code() == errc::would_block || failure.code() == errc::timed_out;
}

}  // namespace

std::array<std::byte, kFrameHeaderSize> frame_header(std::uint32_t size) noexcept {
  return {std::byte{kFrameMagic},
          std::byte{kFrameVersion},
          std::byte{0},
          std::byte{0},
          static_cast<std::byte>(size & 0xFF),
          static_cast<std::byte>((size >> 8) & 0xFF),
          static_cast<std::byte>((size >> 16) & 0xFF),
          static_cast<std::byte>((size >> 24) & 0xFF)};
}

result<void> FramedStream::flush(detail::WaitLimit limit) {
  while (pending_sent_ < pending_.size()) {
    auto written = stream_.write_some(std::span(pending_).subspan(pending_sent_), limit);
    if (!written) return std::move(written).error();
    pending_sent_ += *written;
  }
  pending_.clear();
  pending_sent_ = 0;
  return {};
}

result<void> FramedStream::send_frame(std::span<const std::byte> payload, detail::WaitLimit limit) {
  const std::size_t max = std::min(options_.max_frame, kMaxWireFrame);
  if (payload.size() > max) return error(errc::invalid_argument, stream_.shared_name(), frame_too_large(payload.size(), max));
  if (auto flushed = flush(limit); !flushed) return flushed;
  const auto header = frame_header(static_cast<std::uint32_t>(payload.size()));
  const std::size_t total = kFrameHeaderSize + payload.size();
  std::size_t sent = 0;
  while (sent < total) {
    // Header and payload in one gathered write: one syscall for small frames.
    iovec pieces[2];
    int count = 0;
    if (sent < kFrameHeaderSize)
      pieces[count++] = {const_cast<std::byte*>(header.data()) + sent, kFrameHeaderSize - sent};
    const std::size_t payload_sent = sent > kFrameHeaderSize ? sent - kFrameHeaderSize : 0;
    if (payload_sent < payload.size())
      pieces[count++] = {const_cast<std::byte*>(payload.data()) + payload_sent, payload.size() - payload_sent};
    auto written = stream_.write_vector(pieces, count, limit);
    if (!written) {
      if (sent == 0 || !limit_reached(written.error())) return std::move(written).error();
      // Committed: keep the rest so the stream never carries half a frame.
      pending_.clear();
      pending_sent_ = 0;
      if (sent < kFrameHeaderSize) pending_.insert(pending_.end(), header.begin() + static_cast<std::ptrdiff_t>(sent), header.end());
      pending_.insert(pending_.end(), payload.begin() + static_cast<std::ptrdiff_t>(payload_sent), payload.end());
      return {};
    }
    sent += *written;
  }
  return {};
}

result<void> FramedStream::parse_header() {
  const auto byte = [&](std::size_t i) { return std::to_integer<std::uint32_t>(header_[i]); };
  header_have_ = 0;
  if (byte(0) != kFrameMagic || byte(1) != kFrameVersion || byte(2) != 0 || byte(3) != 0) {
    broken_ = true;
    char text[64];
    std::snprintf(text, sizeof text, "bad frame header %02x %02x %02x %02x", byte(0), byte(1), byte(2), byte(3));
    return error(errc::corrupt, stream_.shared_name(), text);
  }
  const std::size_t size = byte(4) | (byte(5) << 8) | (byte(6) << 16) | (byte(7) << 24);
  if (size > options_.max_frame) {
    broken_ = true;
    return error(errc::limit_reached, stream_.shared_name(), "peer sent " + frame_too_large(size, options_.max_frame));
  }
  in_payload_ = true;
  payload_size_ = size;
  payload_have_ = 0;
  payload_.clear();
  return {};
}

void FramedStream::take_staged_payload() {
  const std::size_t take = std::min(staged_end_ - staged_begin_, payload_size_ - payload_have_);
  if (take == 0) return;
  if (payload_.size() < payload_have_ + take) payload_.resize(payload_have_ + take);
  std::memcpy(payload_.data() + payload_have_, staging_.data() + staged_begin_, take);
  payload_have_ += take;
  staged_begin_ += take;
}

result<Frame> FramedStream::receive_frame(detail::WaitLimit limit) {
  if (broken_) return error(errc::corrupt, stream_.shared_name(), "out of step after a bad frame; close the stream");
  for (;;) {
    if (!in_payload_) {
      const std::size_t take = std::min(staged_end_ - staged_begin_, kFrameHeaderSize - header_have_);
      if (take > 0) std::memcpy(header_.data() + header_have_, staging_.data() + staged_begin_, take);
      header_have_ += take;
      staged_begin_ += take;
      if (header_have_ == kFrameHeaderSize) {
        if (auto parsed = parse_header(); !parsed) return std::move(parsed).error();
      }
    }
    if (in_payload_) {
      take_staged_payload();
      if (payload_have_ == payload_size_) {
        in_payload_ = false;
        payload_.resize(payload_size_);
        return std::exchange(payload_, Frame{});
      }
    }
    // Need more bytes. A large remainder goes straight into the payload;
    // everything else is read ahead into the staging buffer.
    std::span<std::byte> target;
    const bool direct = in_payload_ && payload_size_ - payload_have_ >= kStagingSize;
    if (direct) {
      // Grow with what arrives, never ahead of it by more than it has.
      const std::size_t grown =
          std::min(payload_size_, payload_have_ + std::max(payload_have_, kStagingSize));
      if (payload_.size() < grown) payload_.resize(grown);
      target = std::span(payload_).subspan(payload_have_, grown - payload_have_);
    } else {
      if (staging_.empty()) staging_.resize(kStagingSize);
      staged_begin_ = staged_end_ = 0;
      target = std::span(staging_);
    }
    auto got = stream_.read_some(target, limit);
    if (!got) return std::move(got).error();
    if (*got == 0) {
      if (!mid_frame()) return error(errc::peer_gone, stream_.shared_name(), "end of stream");
      const std::string progress = in_payload_ ? std::to_string(payload_have_) + " of " + std::to_string(payload_size_) +
                                                     " payload bytes"
                                               : std::to_string(header_have_) + " of 8 header bytes";
      return error(errc::peer_gone, stream_.shared_name(), "end of stream inside a frame (" + progress + " came)");
    }
    if (direct) {
      payload_have_ += *got;
    } else {
      staged_end_ = *got;
    }
  }
}

}  // namespace ferry
