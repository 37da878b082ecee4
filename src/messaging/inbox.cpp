#include "ferry/messaging/inbox.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "ferry/os/process.hpp"

namespace ferry {
namespace {

std::string inbox_name(ProcessId process) {
  char text[48];
  std::snprintf(text, sizeof text, "inbox-%016llx", static_cast<unsigned long long>(process.packed()));
  return text;
}

std::string link_path(std::string_view name) { return "/dev/shm/ferry." + std::string(name); }

// The process an inbox name belongs to (none for other mailboxes).
std::optional<ProcessId> inbox_owner(std::string_view name) {
  unsigned long long packed = 0;
  char rest = 0;
  if (std::sscanf(std::string(name).c_str(), "inbox-%16llx%c", &packed, &rest) != 1) return std::nullopt;
  return ProcessId::from_packed(packed);
}

struct Self {
  std::mutex mutex;
  std::unique_ptr<Inbox> inbox;
  ProcessId owner;
  static Self& instance() {
    // Never destroyed (other static destructors may still send); the inbox
    // itself goes at exit, in the process that made it.
    static Self* self = [] {
      std::atexit(&Self::at_exit);
      return new Self;
    }();
    return *self;
  }
  static void at_exit() { Inbox::close(); }
};

// Mailboxes this process sends to by pid or name, kept open: opening maps
// three files, too much for every message. One mutex each: a Mailbox object
// is used by one thread at a time.
struct Destination {
  explicit Destination(Mailbox opened) : box(std::move(opened)) {}
  Mailbox box;
  std::mutex mutex;
};

struct Destinations {
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<Destination>> open;
  ProcessId owner;
  static Destinations& instance() {
    static Destinations* destinations = new Destinations;  // see Self
    return *destinations;
  }
};

// Registers `name` as a link to the inbox directory; a link left by a dead
// process (its target gone) is replaced.
result<void> register_name(std::string_view name, const std::string& target) {
  const std::string link = link_path(name);
  const std::string description = "inbox name '" + std::string(name) + "'";
  if (name.empty() || name.find('/') != std::string_view::npos) {
    return error(errc::invalid_argument, description, "a name must not be empty nor contain '/'");
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (::symlink(("ferry." + target).c_str(), link.c_str()) == 0) return {};
    if (errno != EEXIST) return error::from_errno(errno, description, "symlink " + link);
    struct stat facts{};
    if (::stat(link.c_str(), &facts) == 0) {
      return error(errc::already_exists, description, "a live process registered it");
    }
    (void)::unlink(link.c_str());  // dangling: its process is gone
  }
  return error(errc::already_exists, description, "another process registered it meanwhile");
}

result<void> send_to_mailbox(const std::string& mailbox_name, std::span<const std::byte> message,
                             SendOptions options, WaitStrategy strategy) {
  auto& destinations = Destinations::instance();
  std::unique_lock guard(destinations.mutex);
  if (destinations.owner != ProcessId::current()) {
    // After fork: the mailboxes the parent opened are the parent's to close.
    for (auto& entry : destinations.open) (void)entry.second.release();
    destinations.open.clear();
    destinations.owner = ProcessId::current();
  }
  auto found = destinations.open.find(mailbox_name);
  if (found == destinations.open.end()) {
    // Inboxes of processes that died stay alive while we hold them open: let go.
    std::erase_if(destinations.open, [](const auto& entry) {
      const auto owner = inbox_owner(entry.first);
      return owner && !owner->alive();
    });
    auto opened = Mailbox::open(mailbox_name, {.allow_foreign_owner = true});
    if (!opened) return std::move(opened).error();
    found = destinations.open.emplace(mailbox_name, std::make_unique<Destination>(std::move(*opened))).first;
  }
  Destination& destination = *found->second;
  guard.unlock();  // a full destination must not hold up sends to the others
  std::lock_guard one_thread(destination.mutex);
  return destination.box.send(message, options, strategy);
}

}  // namespace

result<std::string> Inbox::name_of(pid_t pid) {
  const auto process = ProcessId::of(pid);
  if (!process) {
    return error(errc::not_found, "inbox of process " + std::to_string(pid), "no such process");
  }
  return inbox_name(*process);
}

result<Inbox*> Inbox::self(const InboxOptions& options) {
  auto& self = Self::instance();
  std::lock_guard guard(self.mutex);
  const ProcessId me = ProcessId::current();
  if (self.inbox && self.owner == me) return self.inbox.get();
  // After fork the parent's inbox object is not ours to destroy: let it go.
  (void)self.inbox.release();
  const std::string name = inbox_name(me);
  auto created = Mailbox::create(
      name, {.capacity = options.capacity, .persistence = Persistence::process, .mode = options.mode});
  if (!created) return std::move(created).error();
  if (!options.name.empty()) {
    if (auto registered = register_name(options.name, name); !registered) return registered.error();
  }
  self.inbox.reset(new Inbox(std::move(*created), options.name));
  self.owner = me;
  return self.inbox.get();
}

void Inbox::close() {
  Self& self = Self::instance();
  std::lock_guard guard(self.mutex);
  if (self.owner == ProcessId::current()) self.inbox.reset();
}

Inbox::~Inbox() {
  if (!registered_.empty()) (void)::unlink(link_path(registered_).c_str());
}

result<void> send_to(pid_t pid, std::span<const std::byte> message, SendOptions options, WaitStrategy strategy) {
  auto name = Inbox::name_of(pid);
  if (!name) return std::move(name).error();
  auto sent = send_to_mailbox(*name, message, options, strategy);
  if (!sent && sent.error().code() == errc::not_found) {
    return error(errc::not_found, "inbox of process " + std::to_string(pid), "that process has no inbox");
  }
  return sent;
}

result<void> send_to(std::string_view name, std::span<const std::byte> message, SendOptions options,
                     WaitStrategy strategy) {
  // A registered name links to an inbox: send to what it names now (a name
  // whose process died no longer resolves).
  std::string target(name);
  char linked[256];
  const ssize_t length = ::readlink(link_path(name).c_str(), linked, sizeof linked - 1);
  if (length > 0) {
    const std::string_view text(linked, static_cast<std::size_t>(length));
    struct stat facts{};
    if (!text.starts_with("ferry.") || ::stat(link_path(name).c_str(), &facts) != 0 ||
        !inbox_owner(text.substr(6)).value_or(ProcessId{}).alive()) {
      return error(errc::not_found, "inbox '" + std::string(name) + "'", "no live process registered that name");
    }
    target = text.substr(6);
  }
  auto sent = send_to_mailbox(target, message, options, strategy);
  if (!sent && sent.error().code() == errc::not_found) {
    return error(errc::not_found, "inbox '" + std::string(name) + "'", "no live process registered that name");
  }
  return sent;
}

}  // namespace ferry
