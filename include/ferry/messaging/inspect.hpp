// What `ferry ls` says about messaging objects: the ObjectInspector of the
// messaging layer.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "ferry/os/registry.hpp"

namespace ferry {

/// Adds details for channels (capacity, queued messages and bytes, sender and
/// receiver pids and whether they live). Reads a snapshot; never writes.
void describe_messaging_object(ObjectRecord& record, std::span<const std::byte> data);

/// Adds loan_slabs, loan_bytes and loan_limit for an object's chunk pool,
/// from its slab table (detail/chunk_pool.hpp).
void describe_loans(ObjectRecord& record, const std::atomic<std::uint64_t>* slab_table, std::uint64_t limit);

}  // namespace ferry
