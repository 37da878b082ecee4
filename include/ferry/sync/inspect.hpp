// What `ferry ls` says about sync primitives: the ObjectInspector of the sync layer.
#pragma once

#include <cstddef>
#include <span>

#include "ferry/os/registry.hpp"

namespace ferry {

/// Adds details for named sync primitives (a mutex's owner and whether it is
/// alive, a semaphore's value, ...). Does nothing for other objects. Reads
/// the object as a snapshot and never writes it.
void describe_sync_object(ObjectRecord& record, std::span<const std::byte> data);

}  // namespace ferry
