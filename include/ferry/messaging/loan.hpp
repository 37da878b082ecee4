// Loans: large messages written once into shared memory and handed over by
// reference ("copy small, map large").
//
//   auto loan = tx->loan(64 << 20);                 // a chunk of shared memory
//   fill(loan->data());                              // write the payload in place
//   tx->send(std::move(*loan));                      // hands over a reference
//
//   auto frame = rx->peek();                         // the receiver reads it in place
//   use(*frame);
//   rx->release();                                   // the chunk goes back to the pool
//
// A plain send(bytes) decides by itself: a message the ring cannot hold
// (larger than max_message) is copied into a chunk; one of `threshold` bytes
// or more, too, when a threshold is set (it keeps large messages out of a
// ring meant for small ones).
//
// The pool is the sender's: chunks of power-of-two sizes (4 KiB and up) in
// slabs that are made when needed, up to `limit` bytes in all. A loan that
// cannot be served within the limit waits for the receiver to release chunks
// (or fails with limit_reached when only this sender's own unsent loans hold
// them). Chunks held by a process that died are reclaimed: see
// detail/chunk_pool.hpp for how.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "ferry/messaging/detail/chunk_pool.hpp"

namespace ferry {

struct LoanOptions {
  /// send(bytes) hands messages of at least this many bytes over in a chunk
  /// (and always those larger than max_message). Unset by default: measured
  /// with `ferry bench --only ferry.channel.adaptive,ferry.auto --rtt-sizes
  /// 16K,32K,64K,256K,1M`, copying into a chunk cost more than copying into
  /// the ring at every size (README, Channel), so the ring takes all it can.
  std::size_t threshold = SIZE_MAX;
  /// Bytes the chunks may occupy in all; also the largest message.
  std::size_t limit = std::size_t{256} << 20;
};

/// What a sender's chunks occupy (ChannelSender::loan_usage).
struct LoanUsage {
  std::size_t slabs = 0;   ///< segments of chunks
  std::size_t bytes = 0;   ///< their chunks' bytes, at most the limit
  std::size_t chunks = 0;
  std::size_t in_use = 0;  ///< loaned, or sent and not yet released by the receiver
};

/// A writable chunk of shared memory, loaned by a sender until it sends it
/// (the chunk then belongs to the receiver until it releases the message) or
/// drops it (the chunk goes back to the pool). Used by the sender's thread;
/// must not outlive the sender that made it.
class Loan {
 public:
  Loan(Loan&& other) noexcept
      : pool_(std::move(other.pool_)), ref_(other.ref_), bytes_(other.bytes_) {}
  Loan& operator=(Loan&& other) noexcept {
    if (this != &other) {
      drop();
      pool_ = std::move(other.pool_);
      ref_ = other.ref_;
      bytes_ = other.bytes_;
    }
    return *this;
  }
  ~Loan() { drop(); }

  /// The payload's bytes, exactly as many as were asked for.
  [[nodiscard]] std::span<std::byte> data() const noexcept { return bytes_; }
  [[nodiscard]] std::size_t size() const noexcept { return bytes_.size(); }
  /// Sends only the first `size` bytes (no more than loaned).
  void shrink(std::size_t size) noexcept {
    if (size < bytes_.size()) {
      bytes_ = bytes_.first(size);
      ref_.size = size;
    }
  }

 private:
  friend class ChannelSender;
  friend class Mailbox;
  friend class TopicPublisher;
  Loan(std::shared_ptr<detail::ChunkPool> pool, const detail::ChunkGrant& grant) noexcept
      : pool_(std::move(pool)), ref_(grant.ref), bytes_(grant.bytes) {}
  void drop() noexcept {
    if (pool_) pool_->give_back(ref_);
    pool_.reset();
  }

  std::shared_ptr<detail::ChunkPool> pool_;  // null once sent
  detail::ChunkRef ref_{};
  std::span<std::byte> bytes_;
};

}  // namespace ferry
