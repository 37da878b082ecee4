#include "ferry/messaging/inspect.hpp"

#include "ferry/messaging/detail/channel_layout.hpp"
#include "ferry/os/process.hpp"

namespace ferry {
namespace {

void describe_role(ObjectRecord& record, const std::string& role, std::uint64_t word) {
  if (word == detail::kRoleNone) {
    record.details.emplace_back(role, "none");
  } else if (word == detail::kRoleLeft) {
    record.details.emplace_back(role, "left");
  } else {
    const auto who = ProcessId::from_packed(word);
    record.details.emplace_back(role + "_pid", std::to_string(who.pid()));
    record.details.emplace_back(role + "_alive", who.alive() ? "yes" : "no");
  }
}

}  // namespace

void describe_loans(ObjectRecord& record, const std::atomic<std::uint64_t>* slab_table, std::uint64_t limit) {
  std::size_t slabs = 0, chunk_bytes = 0;
  for (std::size_t i = 0; i < detail::kMaxSlabs; ++i) {
    const auto shape = detail::SlabShape::decode(slab_table[i].load(std::memory_order_relaxed));
    if (!shape.present() || !shape.valid()) continue;
    ++slabs;
    chunk_bytes += shape.count * shape.chunk_size();
  }
  record.details.emplace_back("loan_slabs", std::to_string(slabs));
  record.details.emplace_back("loan_bytes", std::to_string(chunk_bytes));
  record.details.emplace_back("loan_limit", std::to_string(limit));
}

void describe_messaging_object(ObjectRecord& record, std::span<const std::byte> data) {
  if (!record.info || record.info->object_type != ObjectType::channel) return;
  if (data.size() < detail::kChannelRingOffset) return;
  const auto& control = *reinterpret_cast<const detail::ChannelControl*>(data.data());
  const std::uint64_t tail = control.tail.load(std::memory_order_acquire);
  const std::uint64_t head = control.head.load(std::memory_order_acquire);
  const std::uint64_t sent = control.messages_sent.load(std::memory_order_relaxed);
  const std::uint64_t received = control.messages_received.load(std::memory_order_relaxed);
  record.details.emplace_back("capacity", std::to_string(control.capacity));
  record.details.emplace_back("max_message", std::to_string(control.max_message));
  // The receiver may have skipped a wrap record the sender has not published yet.
  record.details.emplace_back("queued_bytes", std::to_string(tail >= head ? tail - head : 0));
  record.details.emplace_back("queued_messages", sent >= received ? std::to_string(sent - received) : "corrupt");
  describe_loans(record, control.slabs, control.loan_limit);
  describe_role(record, "sender", control.sender.load(std::memory_order_relaxed));
  describe_role(record, "receiver", control.receiver.load(std::memory_order_relaxed));
}

}  // namespace ferry
