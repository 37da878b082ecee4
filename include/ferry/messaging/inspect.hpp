// What `ferry ls` says about messaging objects: the ObjectInspector of the
// messaging layer.
#pragma once

#include <cstddef>
#include <span>

#include "ferry/os/registry.hpp"

namespace ferry {

/// Adds details for channels (capacity, queued messages and bytes, sender and
/// receiver pids and whether they live). Reads a snapshot; never writes.
void describe_messaging_object(ObjectRecord& record, std::span<const std::byte> data);

}  // namespace ferry
