#include "ferry/messaging/detail/chunk_pool.hpp"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <bit>

#include "../os/segment_internal.hpp"
#include "ferry/messaging/loan.hpp"

namespace ferry::detail {

std::string ChunkHome::slab_name(std::size_t slab, std::uint32_t generation) const {
  std::string slab_name = name;
  slab_name.append(".chunks-").append(std::to_string(slab)).append("-").append(std::to_string(generation));
  return slab_name;
}

namespace {

unsigned chunk_shift_for(std::size_t size) noexcept {
  return std::max<unsigned>(kMinChunkShift, static_cast<unsigned>(std::bit_width(size > 0 ? size - 1 : 0)));
}

SlabShape shape_for(unsigned chunk_shift, std::size_t limit) noexcept {
  const std::size_t target = std::min(kSlabTargetBytes, limit);
  const std::size_t count = std::clamp<std::size_t>(target >> chunk_shift, 1, kMaxChunksPerSlab);
  return {0, chunk_shift, static_cast<std::uint32_t>(count)};
}

bool sent(std::uint64_t state) noexcept { return (state & 7) == kChunkSentTag; }
bool loaned(std::uint64_t state) noexcept { return (state & 7) == kChunkLoaned; }
std::uint64_t sent_position(std::uint64_t state) noexcept { return state & ~std::uint64_t{7}; }

bool sent_before(std::uint64_t state, std::uint64_t released) noexcept {
  return sent(state) && sent_position(state) < released;
}

bool chunk_free(std::uint64_t state, std::uint64_t released) noexcept {
  return state == kChunkFree || sent_before(state, released);
}

result<Segment> open_slab(const ChunkHome& home, std::size_t slab, const SlabShape& shape, Access access) {
  return Segment::open(home.slab_name(slab, shape.generation),
                       {.kind = home.kind,
                        .size = shape.data_bytes(),
                        .access = access,
                        .allow_foreign_owner = home.foreign_owners,
                        .object_type = ObjectType::chunks});
}

}  // namespace

// ------------------------------------------------------------------ pool

struct ChunkPool::Slab {
  SlabShape shape;
  Segment segment;
  ChunkDescriptor* descriptors;
  std::byte* chunks;
  std::uint32_t cursor = 0;  // where the next search for a free chunk starts

  Slab(SlabShape s, Segment seg) : shape(s), segment(std::move(seg)) {
    std::byte* data = segment.data().data();
    descriptors = reinterpret_cast<ChunkDescriptor*>(data);
    chunks = data + shape.descriptor_bytes();
  }
  [[nodiscard]] std::size_t chunk_bytes() const noexcept { return shape.count * shape.chunk_size(); }
  [[nodiscard]] bool all_free(std::uint64_t released) const noexcept {
    for (std::uint32_t i = 0; i < shape.count; ++i) {
      if (!chunk_free(descriptors[i].state.load(std::memory_order_relaxed), released)) return false;
    }
    return true;
  }
};

ChunkPool::ChunkPool(ChunkHome home, std::atomic<std::uint64_t>* table, std::size_t limit)
    : home_(std::move(home)), table_(table), limit_(limit), slabs_(kMaxSlabs) {}

ChunkPool::~ChunkPool() = default;

result<void> ChunkPool::map(std::size_t index, const SlabShape& shape) {
  if (!shape.valid()) return error(errc::corrupt, home_.description, "slab table entry " + std::to_string(index));
  auto segment = open_slab(home_, index, shape, Access::read_write);
  if (!segment) {
    if (segment.error().code() != errc::not_found) return std::move(segment).error();
    table_[index].store(SlabShape{shape.generation, 0, 0}.encode(), std::memory_order_release);  // gone with its processes
    return {};
  }
  slabs_[index] = std::make_unique<Slab>(shape, std::move(*segment));
  return {};
}

result<void> ChunkPool::refresh() {
  for (std::size_t i = 0; i < kMaxSlabs; ++i) {
    const SlabShape shape = SlabShape::decode(table_[i].load(std::memory_order_acquire));
    auto& slab = slabs_[i];
    if (slab && (!shape.present() || slab->shape.encode() != shape.encode())) slab.reset();
    if (!slab && shape.present()) {
      if (auto mapped = map(i, shape); !mapped) return mapped;
    }
  }
  return {};
}

result<void> ChunkPool::adopt(std::uint64_t resume_at) {
  if (auto refreshed = refresh(); !refreshed) return refreshed;
  for (const auto& slab : slabs_) {
    for (std::uint32_t c = 0; slab && c < slab->shape.count; ++c) {
      const std::uint64_t state = slab->descriptors[c].state.load(std::memory_order_relaxed);
      const bool unpublished = sent(state) && sent_position(state) >= resume_at;
      if (loaned(state) || unpublished) slab->descriptors[c].state.store(kChunkFree, std::memory_order_relaxed);
    }
  }
  return {};
}

void ChunkPool::give_back_loans_of(std::uint32_t loaner) noexcept {
  const std::uint64_t loaned_by = (std::uint64_t{loaner} << 6) | kChunkLoaned;
  for (const auto& slab : slabs_) {
    for (std::uint32_t c = 0; slab && c < slab->shape.count; ++c) {
      if (slab->descriptors[c].state.load(std::memory_order_relaxed) == loaned_by) {
        slab->descriptors[c].state.store(kChunkFree, std::memory_order_release);
      }
    }
  }
}

std::optional<std::uint64_t> ChunkPool::oldest_sent(std::size_t size) const noexcept {
  const unsigned chunk_shift = chunk_shift_for(size);
  std::optional<std::uint64_t> oldest;
  for (const auto& slab : slabs_) {
    for (std::uint32_t c = 0; slab && slab->shape.chunk_shift == chunk_shift && c < slab->shape.count; ++c) {
      const std::uint64_t state = slab->descriptors[c].state.load(std::memory_order_relaxed);
      if (sent(state) && (!oldest || sent_position(state) < *oldest)) oldest = sent_position(state);
    }
  }
  return oldest;
}

ChunkDescriptor* ChunkPool::descriptor(const ChunkRef& ref) const noexcept {
  return &slabs_[ref.slab]->descriptors[ref.chunk];
}

result<std::optional<ChunkGrant>> ChunkPool::take_from(std::size_t index, std::uint64_t released,
                                                       std::uint32_t loaner) {
  Slab& slab = *slabs_[index];
  for (std::uint32_t step = 0; step < slab.shape.count; ++step) {
    const std::uint32_t c = (slab.cursor + step) % slab.shape.count;
    ChunkDescriptor& descriptor = slab.descriptors[c];
    if (!chunk_free(descriptor.state.load(std::memory_order_relaxed), released)) continue;
    // Generation first (a seqlock's writer): a reader still holding the old
    // reference sees it changed once it looks after reading.
    const std::uint64_t generation = descriptor.generation.load(std::memory_order_relaxed) + 1;
    descriptor.generation.store(generation, std::memory_order_relaxed);
    descriptor.state.store((std::uint64_t{loaner} << 6) | kChunkLoaned, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    slab.cursor = (c + 1) % slab.shape.count;
    const std::size_t size = slab.shape.chunk_size();
    return std::optional<ChunkGrant>(ChunkGrant{
        {static_cast<std::uint32_t>(index), c, generation, 0}, {slab.chunks + std::size_t{c} * size, size}});
  }
  return std::optional<ChunkGrant>{};
}

void ChunkPool::remove_slab(std::size_t index) noexcept {
  const SlabShape shape = slabs_[index]->shape;
  (void)Segment::destroy(home_.slab_name(index, shape.generation), home_.kind);
  slabs_[index].reset();  // a receiver's mapping keeps the memory until it unmaps
  table_[index].store(SlabShape{shape.generation, 0, 0}.encode(), std::memory_order_release);
}

result<bool> ChunkPool::add_slab(unsigned chunk_shift, std::uint64_t released) {
  SlabShape shape = shape_for(chunk_shift, limit_);
  const std::size_t bytes = shape.count * shape.chunk_size();
  std::size_t used = 0;
  for (const auto& slab : slabs_) used += slab ? slab->chunk_bytes() : 0;
  // Room is made by removing slabs of other sizes that are wholly free,
  // largest first; a limit is a budget, not a partition.
  while (used + bytes > limit_) {
    std::optional<std::size_t> victim;
    for (std::size_t i = 0; i < kMaxSlabs; ++i) {
      if (slabs_[i] && slabs_[i]->shape.chunk_shift != chunk_shift && slabs_[i]->all_free(released) &&
          (!victim || slabs_[i]->chunk_bytes() > slabs_[*victim]->chunk_bytes())) {
        victim = i;
      }
    }
    if (!victim) return false;
    used -= slabs_[*victim]->chunk_bytes();
    remove_slab(*victim);
  }
  std::optional<std::size_t> index;
  for (std::size_t i = 0; i < kMaxSlabs && !index; ++i) {
    if (!slabs_[i]) index = i;
  }
  if (!index) return false;
  shape.generation = SlabShape::decode(table_[*index].load(std::memory_order_relaxed)).generation + 1;
  const SegmentOptions options{.kind = home_.kind,
                               .size = shape.data_bytes(),
                               .persistence = home_.persistence,
                               .mode = home_.mode,
                               .object_type = ObjectType::chunks};
  const std::string name = home_.slab_name(*index, shape.generation);
  auto segment = Segment::create(name, options);
  if (!segment && segment.error().code() == errc::already_exists) {
    // Left by a sender that died between making it and entering it in the table.
    (void)Segment::destroy(name, home_.kind);
    segment = Segment::create(name, options);
  }
  if (!segment) return std::move(segment).error();
  (void)segment->prefault();  // the data path takes no page faults (best effort)
  slabs_[*index] = std::make_unique<Slab>(shape, std::move(*segment));
  // Generations start from the slab's own, so a reference into an earlier
  // slab at this index never matches a chunk of this one.
  for (std::uint32_t c = 0; c < shape.count; ++c) {
    slabs_[*index]->descriptors[c].generation.store(std::uint64_t{shape.generation} << 32, std::memory_order_relaxed);
  }
  table_[*index].store(shape.encode(), std::memory_order_release);
  return true;
}

result<std::optional<ChunkGrant>> ChunkPool::take(std::size_t size, std::uint64_t released, bool grow,
                                                  std::uint32_t loaner) {
  if (!home_.supported()) {
    return error(errc::unsupported, home_.description, "loans need a posix or file segment (chunks are named after it)");
  }
  if (size > limit_) {
    return error(errc::invalid_argument, home_.description,
                 "a loan of " + std::to_string(size) + " bytes is larger than the chunk limit of " +
                     std::to_string(limit_) + " bytes");
  }
  const unsigned chunk_shift = chunk_shift_for(size);
  const auto granted = [&](std::optional<ChunkGrant> grant) {
    grant->ref.size = size;
    grant->bytes = grant->bytes.first(size);
    return grant;
  };
  for (std::size_t i = 0; i < kMaxSlabs; ++i) {
    if (!slabs_[i] || slabs_[i]->shape.chunk_shift != chunk_shift) continue;
    auto taken = take_from(i, released, loaner);
    if (!taken) return std::move(taken).error();
    if (*taken) return granted(std::move(*taken));
  }
  if (!grow) return std::optional<ChunkGrant>{};
  auto grown = add_slab(chunk_shift, released);
  if (!grown) return std::move(grown).error();
  if (*grown) {
    for (std::size_t i = kMaxSlabs; i-- > 0;) {  // the newest slab of this size
      if (slabs_[i] && slabs_[i]->shape.chunk_shift == chunk_shift) {
        auto taken = take_from(i, released, loaner);
        if (!taken) return std::move(taken).error();
        if (*taken) return granted(std::move(*taken));
      }
    }
  }
  // Waiting helps only if the receiver holds chunks it will release.
  if (receiver_holds_chunks(released)) return std::optional<ChunkGrant>{};
  return error(errc::limit_reached, home_.description,
               "no chunk of " + std::to_string(std::size_t{1} << chunk_shift) +
                   " bytes is free and unsent loans hold what the limit of " + std::to_string(limit_) +
                   " bytes allows");
}

void ChunkPool::mark_sent(const ChunkRef& ref, std::uint64_t position) noexcept {
  descriptor(ref)->state.store(position | kChunkSentTag, std::memory_order_release);
}

void ChunkPool::give_back(const ChunkRef& ref) noexcept {
  ChunkDescriptor* lent = descriptor(ref);
  if (lent->generation.load(std::memory_order_relaxed) == ref.generation &&
      loaned(lent->state.load(std::memory_order_relaxed))) {
    lent->state.store(kChunkFree, std::memory_order_release);
  }
}

bool ChunkPool::receiver_holds_chunks(std::uint64_t released) const noexcept {
  for (const auto& slab : slabs_) {
    for (std::uint32_t c = 0; slab && c < slab->shape.count; ++c) {
      const std::uint64_t state = slab->descriptors[c].state.load(std::memory_order_relaxed);
      if (sent(state) && sent_position(state) >= released) return true;
    }
  }
  return false;
}

LoanUsage ChunkPool::usage(std::uint64_t released) const noexcept {
  LoanUsage usage;
  for (const auto& slab : slabs_) {
    if (!slab) continue;
    ++usage.slabs;
    usage.bytes += slab->chunk_bytes();
    usage.chunks += slab->shape.count;
    for (std::uint32_t c = 0; c < slab->shape.count; ++c) {
      if (!chunk_free(slab->descriptors[c].state.load(std::memory_order_relaxed), released)) ++usage.in_use;
    }
  }
  return usage;
}

void destroy_slabs(const ChunkHome& home) noexcept {
  if (!home.supported()) return;
  const std::string stem = backing_path(home.kind, home.name + ".chunks-");
  const std::size_t slash = stem.rfind('/');
  const std::string directory = slash == 0 ? "/" : slash == std::string::npos ? "." : stem.substr(0, slash);
  const std::string_view prefix = std::string_view(stem).substr(slash == std::string::npos ? 0 : slash + 1);
  DIR* listing = ::opendir(directory.c_str());
  if (listing == nullptr) return;
  while (const dirent* entry = ::readdir(listing)) {
    if (std::string_view(entry->d_name).starts_with(prefix)) (void)::unlinkat(::dirfd(listing), entry->d_name, 0);
  }
  ::closedir(listing);
}

// ---------------------------------------------------------------- reader

struct ChunkReader::Mapped {
  SlabShape shape;
  Segment segment;
};

ChunkReader::ChunkReader(ChunkHome home, const std::atomic<std::uint64_t>* table)
    : home_(std::move(home)), table_(table), mapped_(kMaxSlabs) {}
ChunkReader::~ChunkReader() = default;
ChunkReader::ChunkReader(ChunkReader&&) noexcept = default;
ChunkReader& ChunkReader::operator=(ChunkReader&&) noexcept = default;

result<std::span<const std::byte>> ChunkReader::resolve(const ChunkRef& ref) {
  const auto bad = [&](std::string what) {
    return error(errc::corrupt, home_.description,
                 "a loaned message names slab " + std::to_string(ref.slab) + " chunk " + std::to_string(ref.chunk) +
                     ", " + std::move(what));
  };
  if (ref.slab >= kMaxSlabs) return bad("beyond the slab table");
  const SlabShape shape = SlabShape::decode(table_[ref.slab].load(std::memory_order_acquire));
  if (!shape.present()) return bad("which does not exist");
  if (!shape.valid()) return bad("whose table entry is garbage");
  if (ref.chunk >= shape.count) return bad("beyond the slab's " + std::to_string(shape.count) + " chunks");
  if (ref.size > shape.chunk_size()) return bad("with a size larger than the chunk");
  auto& mapped = mapped_[ref.slab];
  if (!mapped || mapped->shape.generation != shape.generation) {
    // Read-only, and so not an attachment (a receiver killed mid-read leaves
    // no entry behind), except where attachments keep the slab alive.
    const Access access = home_.persistence == Persistence::process ? Access::read_write : Access::read_only;
    auto segment = open_slab(home_, ref.slab, shape, access);
    if (!segment) return std::move(segment).error();
    mapped = std::make_unique<Mapped>(Mapped{shape, std::move(*segment)});
  }
  const std::byte* data = mapped->segment.data().data();
  const auto* descriptor = reinterpret_cast<const ChunkDescriptor*>(data) + ref.chunk;
  const std::uint64_t generation = descriptor->generation.load(std::memory_order_acquire);
  if (generation != ref.generation) {
    return bad("reused (generation " + std::to_string(generation) + ", the message carries " +
               std::to_string(ref.generation) + ")");
  }
  return std::span<const std::byte>(data + shape.descriptor_bytes() + std::size_t{ref.chunk} * shape.chunk_size(),
                                    ref.size);
}

bool ChunkReader::reused(const ChunkRef& ref) const noexcept {
  if (ref.slab >= kMaxSlabs || !mapped_[ref.slab]) return false;
  const Mapped& mapped = *mapped_[ref.slab];
  if (ref.chunk >= mapped.shape.count ||
      table_[ref.slab].load(std::memory_order_acquire) != mapped.shape.encode()) {
    return false;
  }
  const auto* descriptor = reinterpret_cast<const ChunkDescriptor*>(mapped.segment.data().data()) + ref.chunk;
  return descriptor->generation.load(std::memory_order_acquire) != ref.generation;
}

bool ChunkReader::still_valid(const ChunkRef& ref) const noexcept {
  std::atomic_thread_fence(std::memory_order_acquire);  // the reads of the payload come before this check
  const auto& mapped = mapped_[ref.slab];
  const auto* descriptor = reinterpret_cast<const ChunkDescriptor*>(mapped->segment.data().data()) + ref.chunk;
  return descriptor->generation.load(std::memory_order_relaxed) == ref.generation;
}

}  // namespace ferry::detail
