#include "ferry/transport/framing.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

namespace ferry {

namespace {

constexpr std::size_t kStagingSize = 64 * 1024;
// A frame at least this large is read straight into its own buffer instead
// of through the staging buffer (saves a copy).
constexpr std::size_t kDirectRead = 16 * 1024;
// The most read speculatively with a header (the size of the frame before).
constexpr std::size_t kMostReadAhead = 1024 * 1024;
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

result<void> FramedStream::send_frame(std::span<const std::span<const std::byte>> parts, detail::WaitLimit limit) {
  if (parts.size() > kMaxFrameParts) {
    return error(errc::invalid_argument, stream_.shared_name(),
                 "a frame of " + std::to_string(parts.size()) + " parts (at most " + std::to_string(kMaxFrameParts) + ")");
  }
  std::size_t payload_size = 0;
  for (const auto part : parts) payload_size += part.size();
  const std::size_t max = std::min(options_.max_frame, kMaxWireFrame);
  if (payload_size > max) return error(errc::invalid_argument, stream_.shared_name(), frame_too_large(payload_size, max));
  if (auto flushed = flush(limit); !flushed) return flushed;

  const auto header = frame_header(static_cast<std::uint32_t>(payload_size));
  std::array<std::span<const std::byte>, kMaxFrameParts + 1> pieces{};
  pieces[0] = header;
  std::copy(parts.begin(), parts.end(), pieces.begin() + 1);
  const std::size_t total = kFrameHeaderSize + payload_size;
  std::size_t sent = 0;
  while (sent < total) {
    // Header and payload in one gathered write: one syscall for small frames.
    iovec vector[kMaxFrameParts + 1];
    int count = 0;
    std::size_t skip = sent;
    for (const auto piece : std::span(pieces).first(parts.size() + 1)) {
      if (skip >= piece.size()) {
        skip -= piece.size();
        continue;
      }
      vector[count++] = {const_cast<std::byte*>(piece.data()) + skip, piece.size() - skip};
      skip = 0;
    }
    auto written = stream_.write_vector(vector, count, limit);
    if (!written) {
      if (sent == 0 || !limit_reached(written.error())) return std::move(written).error();
      // Committed: keep the rest so the stream never carries half a frame.
      pending_.clear();
      pending_sent_ = 0;
      for (int i = 0; i < count; ++i) {
        const auto* bytes = static_cast<const std::byte*>(vector[i].iov_base);
        pending_.insert(pending_.end(), bytes, bytes + vector[i].iov_len);
      }
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
  return {};
}

void FramedStream::take_staged_header() {
  const std::size_t take = std::min(staged_end_ - staged_begin_, kFrameHeaderSize - header_have_);
  if (take == 0) return;
  std::memcpy(header_.data() + header_have_, staging_.data() + staged_begin_, take);
  header_have_ += take;
  staged_begin_ += take;
}

void FramedStream::take_staged_payload() {
  const std::size_t take = std::min(staged_end_ - staged_begin_, payload_size_ - payload_have_);
  if (take == 0) return;
  if (payload_.size() < payload_have_ + take) payload_.resize(payload_have_ + take);
  std::memcpy(payload_.data() + payload_have_, staging_.data() + staged_begin_, take);
  payload_have_ += take;
  staged_begin_ += take;
}

// After a large frame: the rest of the next header and, speculatively, as
// much payload as the last frame had, read straight into the next frame's
// buffer (one read per frame, no copy through the staging buffer). Bytes
// past the new frame's end belong to the frame after it and are staged.
result<std::size_t> FramedStream::read_next_header(detail::WaitLimit limit) {
  payload_.resize(std::min(expect_large_, kMostReadAhead));
  const std::size_t header_wanted = kFrameHeaderSize - header_have_;
  iovec pieces[2] = {{header_.data() + header_have_, header_wanted}, {payload_.data(), payload_.size()}};
  auto got = stream_.read_vector(pieces, 2, limit);
  if (got) note_read(*got, header_wanted + payload_.size());
  if (!got || *got < header_wanted) {
    payload_.clear();
    if (got) header_have_ += *got;
    return got;
  }
  header_have_ = kFrameHeaderSize;
  if (auto parsed = parse_header(); !parsed) return std::move(parsed).error();
  std::size_t spilled = *got - header_wanted;
  if (spilled > payload_size_) {
    staged_begin_ = 0;
    staged_end_ = spilled - payload_size_;
    if (staging_.size() < std::max(staged_end_, kStagingSize)) staging_.resize(std::max(staged_end_, kStagingSize));
    std::memcpy(staging_.data(), payload_.data() + payload_size_, staged_end_);
    spilled = payload_size_;
  }
  payload_have_ = spilled;
  return got;
}

result<Frame> FramedStream::receive(detail::WaitLimit limit, ReadOn read_on) {
  if (broken_) return error(errc::corrupt, stream_.shared_name(), "out of step after a bad frame; close the stream");
  for (bool read_short = false;;) {
    if (!in_payload_) {
      take_staged_header();
      if (header_have_ == kFrameHeaderSize) {
        if (auto parsed = parse_header(); !parsed) return std::move(parsed).error();
      }
    }
    if (in_payload_) {
      take_staged_payload();
      if (payload_have_ == payload_size_) {
        in_payload_ = false;
        expect_large_ = payload_size_ >= kDirectRead ? payload_size_ : 0;
        payload_.resize(payload_size_);
        // A small frame read into a large frame's buffer: give back the rest.
        if (payload_.capacity() > 2 * payload_size_ + kDirectRead) payload_.shrink_to_fit();
        return std::exchange(payload_, Frame{});
      }
    }
    if (read_short) return error(errc::would_block, stream_.shared_name(), "nothing to read");
    // Need more bytes. After a large frame the next one is read straight
    // into its buffer; so is the rest of a large frame; everything else is
    // read ahead into the staging buffer.
    result<std::size_t> got{std::size_t{0}};
    if (!in_payload_ && expect_large_ > 0) {
      got = read_next_header(limit);
    } else if (in_payload_ && payload_size_ >= kDirectRead) {
      // The rest of a large frame, and no further: the next frame then
      // starts a fresh read (straight into its own buffer), never a copy.
      // Grow with what arrives, never ahead of it by more than it has.
      const std::size_t grown = std::min(payload_size_, payload_have_ + std::max(payload_have_, kStagingSize));
      if (payload_.size() < grown) payload_.resize(grown);
      const auto target = std::span(payload_).subspan(payload_have_, grown - payload_have_);
      got = stream_.read_some(target, limit);
      if (got && *got > 0) {
        payload_have_ += *got;
        note_read(*got, target.size());
      }
    } else {
      if (staging_.empty()) staging_.resize(kStagingSize);
      staged_begin_ = staged_end_ = 0;
      got = stream_.read_some(staging_, limit);
      if (got) {
        staged_end_ = *got;
        note_read(*got, staging_.size());
      }
    }
    if (!got) return std::move(got).error();
    read_short = read_on == ReadOn::while_filled && !last_read_filled_;
    if (*got == 0) {
      if (!mid_frame()) return error(errc::peer_gone, stream_.shared_name(), "end of stream");
      const std::string progress = in_payload_ ? std::to_string(payload_have_) + " of " + std::to_string(payload_size_) +
                                                     " payload bytes"
                                               : std::to_string(header_have_) + " of 8 header bytes";
      return error(errc::peer_gone, stream_.shared_name(), "end of stream inside a frame (" + progress + " came)");
    }
  }
}

}  // namespace ferry
