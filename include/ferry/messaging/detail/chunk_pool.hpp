// Chunks: the shared memory that loans hand over by reference. Not API.
//
// A sender's chunks live in slabs, each a segment of its own named after the
// object ("<name>.chunks-<slab>-<generation>"), holding `count` chunks of one
// power-of-two size. Slabs are made on demand, up to the configured limit of
// bytes; a slab all of whose chunks are free may be removed to make room for
// a slab of another size. The object's header holds the slab table, so a
// receiver finds (and maps, once) the slab a reference names:
//
//   slab table entry (one 64-bit word, 0 = no slab):
//   | generation (32) | chunk_shift (8) | count (16) | reserved (8) |
//
//   slab segment data:
//   offset 0                descriptors, 16 bytes per chunk
//   offset descriptor_bytes chunk 0, chunk 1, ... (each 1 << chunk_shift bytes)
//
//   descriptor:  generation (64)  bumped each time the chunk is loaned
//                state (64)       0 free · loaner << 6 | 1: loaned (loaner: the
//                                 publisher entry on a Topic, 0 elsewhere) ·
//                                 position | 2: sent in the record at that
//                                 position (a multiple of 8)
//
// Only the sender writes slabs, descriptors and the table (on a Topic, the
// holder of the publish lock), so no atomic read-modify-write is needed
// anywhere. A chunk sent in the record at
// position p is free again once the receiver released that record (its
// `head` passed p): the ring positions, not reference counts, say what is in
// use, so a receiver killed while reading holds nothing that its successor,
// who resumes at `head`, does not read again. A sender taking over from a
// dead one frees what its predecessor had loaned and the chunks of records it
// never published (position at or past the tail it resumes at).
//
// A reference travels in a ring record: slab, chunk, generation, size. The
// receiver checks the generation against the descriptor when it takes the
// payload and again when it has read it: a chunk that changed under the
// reader is reported (corrupt), never handed out as a message.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ferry/os/error.hpp"
#include "ferry/os/segment.hpp"

namespace ferry {
struct LoanUsage;  // loan.hpp
}

namespace ferry::detail {

inline constexpr std::size_t kMaxSlabs = 64;
inline constexpr unsigned kMinChunkShift = 12;  // a page
inline constexpr unsigned kMaxChunkShift = 40;  // 1 TiB
// A slab of small chunks holds this many bytes (fewer, larger slabs would
// pin more memory for a burst that passed; more, smaller ones cost mappings).
inline constexpr std::size_t kSlabTargetBytes = std::size_t{4} << 20;
inline constexpr std::size_t kMaxChunksPerSlab = 64;
inline constexpr std::uint64_t kChunkFree = 0;
inline constexpr std::uint64_t kChunkLoaned = 1;
inline constexpr std::uint64_t kChunkSentTag = 2;

struct ChunkDescriptor {
  std::atomic<std::uint64_t> generation;
  std::atomic<std::uint64_t> state;
};
static_assert(sizeof(ChunkDescriptor) == 16);

/// What a ring record carries for a loaned message.
struct ChunkRef {
  std::uint32_t slab;
  std::uint32_t chunk;
  std::uint64_t generation;
  std::uint64_t size;
};
static_assert(sizeof(ChunkRef) == 24);

struct SlabShape {
  std::uint32_t generation = 0;
  unsigned chunk_shift = 0;
  std::uint32_t count = 0;

  static SlabShape decode(std::uint64_t word) noexcept {
    return {static_cast<std::uint32_t>(word >> 32), static_cast<unsigned>((word >> 24) & 0xff),
            static_cast<std::uint32_t>((word >> 8) & 0xffff)};
  }
  [[nodiscard]] std::uint64_t encode() const noexcept {
    return (std::uint64_t{generation} << 32) | (std::uint64_t{chunk_shift} << 24) | (std::uint64_t{count} << 8);
  }
  [[nodiscard]] bool present() const noexcept { return count != 0; }
  [[nodiscard]] bool valid() const noexcept {
    return count >= 1 && count <= kMaxChunksPerSlab && chunk_shift >= kMinChunkShift &&
           chunk_shift <= kMaxChunkShift;
  }
  [[nodiscard]] std::size_t chunk_size() const noexcept { return std::size_t{1} << chunk_shift; }
  [[nodiscard]] std::size_t descriptor_bytes() const noexcept { return (count * sizeof(ChunkDescriptor) + 4095) & ~std::size_t{4095}; }
  [[nodiscard]] std::size_t data_bytes() const noexcept { return descriptor_bytes() + count * chunk_size(); }
};

/// Where an object's chunks are named and how they are made.
struct ChunkHome {
  std::string name;  ///< the object's name; slabs are "<name>.chunks-<slab>-<generation>"
  SegmentKind kind = SegmentKind::posix;
  std::optional<Persistence> persistence;
  mode_t mode = 0600;
  std::shared_ptr<const std::string> description;  ///< the object, for errors
  bool foreign_owners = false;  ///< slabs may belong to another uid (a Mailbox's senders)

  [[nodiscard]] std::string slab_name(std::size_t slab, std::uint32_t generation) const;
  [[nodiscard]] bool supported() const noexcept { return kind == SegmentKind::posix || kind == SegmentKind::file; }
};

/// A chunk handed out by ChunkPool::take.
struct ChunkGrant {
  ChunkRef ref;
  std::span<std::byte> bytes;  ///< the whole chunk
};

/// The sender's side: takes, sends and frees chunks; makes and removes slabs.
class ChunkPool {
 public:
  /// `table` is the slab table in the object's header (kMaxSlabs words).
  ChunkPool(ChunkHome home, std::atomic<std::uint64_t>* table, std::size_t limit);
  ~ChunkPool();
  ChunkPool(const ChunkPool&) = delete;
  ChunkPool& operator=(const ChunkPool&) = delete;

  /// Maps the slabs a predecessor made and frees what it held but never
  /// published: chunks loaned, and chunks of records at or past `resume_at`.
  result<void> adopt(std::uint64_t resume_at);
  /// Maps and unmaps slabs to match the table, which other writers (taking
  /// turns under a lock) may have changed. Errors: corrupt.
  result<void> refresh();
  /// Frees the chunks `loaner` loaned and never sent (it died).
  void give_back_loans_of(std::uint32_t loaner) noexcept;
  /// The position of the oldest sent chunk that could serve `size` bytes.
  [[nodiscard]] std::optional<std::uint64_t> oldest_sent(std::size_t size) const noexcept;

  /// A free chunk of at least `size` bytes, growing the pool if the limit
  /// allows. Chunks sent in records before `released` count as free. Empty:
  /// all are in use and the limit forbids growing (wait for the receiver).
  /// `grow` false: only the slabs there are, and nothing but empty otherwise
  /// (a first try with a `released` that may be stale).
  /// Errors: invalid_argument (larger than the limit), limit_reached (this
  /// sender's own unsent loans hold what the limit allows), corrupt, no_space.
  result<std::optional<ChunkGrant>> take(std::size_t size, std::uint64_t released, bool grow = true,
                                         std::uint32_t loaner = 0);
  /// The chunk travels in the record at ring `position` (before it is published).
  void mark_sent(const ChunkRef& ref, std::uint64_t position) noexcept;
  /// A loan dropped unsent.
  void give_back(const ChunkRef& ref) noexcept;

  [[nodiscard]] std::size_t limit() const noexcept { return limit_; }
  [[nodiscard]] const ChunkHome& home() const noexcept { return home_; }

  /// Counts chunks in use (loaned, or sent in a record at or after `released`).
  [[nodiscard]] LoanUsage usage(std::uint64_t released) const noexcept;

 private:
  struct Slab;
  ChunkDescriptor* descriptor(const ChunkRef& ref) const noexcept;
  result<std::optional<ChunkGrant>> take_from(std::size_t slab, std::uint64_t released, std::uint32_t loaner);
  result<void> map(std::size_t slab, const SlabShape& shape);
  result<bool> add_slab(unsigned chunk_shift, std::uint64_t released);
  void remove_slab(std::size_t slab) noexcept;
  /// Whether a chunk was sent in a record the receiver has not released.
  [[nodiscard]] bool receiver_holds_chunks(std::uint64_t released) const noexcept;

  ChunkHome home_;
  std::atomic<std::uint64_t>* table_;
  std::size_t limit_;
  std::vector<std::unique_ptr<Slab>> slabs_;  // kMaxSlabs entries, null where none
};

/// Removes every slab named after `home` (its object is being destroyed),
/// whatever its table says: a process killed between making a slab and
/// entering it leaves one the table does not name, and a corrupt object's
/// table names nothing to trust.
void destroy_slabs(const ChunkHome& home) noexcept;

/// The receiver's side: maps slabs as references name them.
class ChunkReader {
 public:
  ChunkReader(ChunkHome home, const std::atomic<std::uint64_t>* table);
  ~ChunkReader();
  ChunkReader(ChunkReader&&) noexcept;
  ChunkReader& operator=(ChunkReader&&) noexcept;

  /// The payload a reference names, checked against the table and the
  /// descriptor. Errors: corrupt (a reference that does not hold), not_found
  /// (the slab is gone: its processes all died), permission_denied.
  result<std::span<const std::byte>> resolve(const ChunkRef& ref);
  /// Whether the chunk still carries the reference's generation (after reading).
  [[nodiscard]] bool still_valid(const ChunkRef& ref) const noexcept;
  /// After resolve failed: whether only because the chunk was loaned again
  /// since the reference was made (the slab is the one the table names).
  [[nodiscard]] bool reused(const ChunkRef& ref) const noexcept;

 private:
  struct Mapped;
  ChunkHome home_;
  const std::atomic<std::uint64_t>* table_;
  std::vector<std::unique_ptr<Mapped>> mapped_;
};

}  // namespace ferry::detail
