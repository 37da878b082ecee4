// What ls, rm and gc need to treat a mailbox as one object. A mailbox is a
// directory of segments (see ferry/messaging/detail/mailbox_layout.hpp); the
// registry lists segments only, so the tool finds the directories itself
// and lets the registry describe each one's control segment, which then
// stands for the whole mailbox.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>
#include <string_view>

#include "ferry/os/registry.hpp"

namespace ferry::cli {

/// The file every participant of a mailbox maps (mailbox_layout.hpp).
inline constexpr std::string_view kControlFile = "control";

/// A mailbox: the directory /dev/shm/ferry.<name>/ (kernel or process
/// persistence), or a path of its own (file-system persistence; then name == path).
struct MailboxDirectory {
  std::string name;
  std::string path;
  [[nodiscard]] std::string control_path() const { return path + "/" + std::string(kControlFile); }
};

/// Every mailbox in /dev/shm, keyed by the locator the registry gives its
/// control segment ("file:/dev/shm/ferry.<name>/control").
std::map<std::string, MailboxDirectory> find_mailboxes();
/// Names registered by an Inbox (links in /dev/shm) whose inbox is gone.
std::vector<std::string> dangling_names();
/// Removes such a name.
void remove_name(const std::string& name);

/// The mailbox `locator` names, if it is the name of one (or, starting with
/// /, the directory of a file-system-persistent one).
std::optional<MailboxDirectory> find_mailbox(const std::string& locator);

/// True when the mailbox's control segment is gone: its last process died
/// while removing the mailbox (or, for a moment, the mailbox is being created).
bool control_gone(const MailboxDirectory& mailbox);

/// Makes `record` (the registry's record of the control segment, or an empty
/// one) the mailbox's: its name, the directory's owner and mode, the size of
/// all its segments, and kernel persistence for a control segment that
/// outlives its processes.
void make_mailbox_record(ObjectRecord& record, const MailboxDirectory& mailbox);

/// Adds what Mailbox::stats() says to a mailbox's record, or why it cannot.
/// Never opens a process-persistent mailbox whose processes all died: that
/// would remove its control segment, and ls changes nothing.
void describe_mailbox(ObjectRecord& record);

}  // namespace ferry::cli
