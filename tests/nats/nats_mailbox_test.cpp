// nats:// Mailbox on JetStream, against a real nats-server on loopback.
#include "ferry/nats/mailbox.hpp"

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "nats_keys.hpp"
#include "nats_server.hpp"

namespace ferry::nats {
namespace {

using namespace std::chrono_literals;
using test::NatsServer;

using test::bytes;
using test::text;

// ---------------------------------------------------------------- addresses

TEST(NatsAddress, ParsesServersUserOptionsAndName) {
  auto address = Address::parse("nats://alice:s%40cret@10.0.0.1:4222,[::1]:4223/orders?replicas=3&timeout_ms=250");
  ASSERT_TRUE(address) << address.error().message();
  EXPECT_EQ(address->servers, (std::vector<std::string>{"10.0.0.1:4222", "[::1]:4223"}));
  EXPECT_EQ(address->user, "alice");
  EXPECT_EQ(address->password, "s@cret");
  EXPECT_EQ(address->name, "orders");
  EXPECT_EQ(address->replicas, 3);
  EXPECT_EQ(address->timeout, 250ms);
  EXPECT_EQ(address->identity(), "alice");
  EXPECT_EQ(address->to_string(), "nats://alice:***@10.0.0.1:4222,[::1]:4223/orders");  // never the password

  auto credentials = Address::parse("nats://h:1/x?creds=/etc/u.creds&as=bob&tls_ca=/ca.pem");
  ASSERT_TRUE(credentials) << credentials.error().message();
  EXPECT_EQ(credentials->credentials_file, "/etc/u.creds");
  EXPECT_EQ(credentials->identity(), "bob");
  EXPECT_TRUE(credentials->tls);
  EXPECT_EQ(Address::parse("nats://h:1")->identity(), "anonymous");
}

TEST(NatsAddress, RefusesMalformedTextSayingWhy) {
  const std::pair<std::string_view, std::string_view> cases[] = {
      {"tcp://h:1/x", "nats://"},
      {"nats:///x", "no server"},
      {"nats://h/x", "HOST:PORT"},
      {"nats://h:0/x", "HOST:PORT"},
      {"nats://h:70000/x", "HOST:PORT"},
      {"nats://h:1/a.b", "name"},
      {"nats://h:1/x?colour=red", "unknown option 'colour'"},
      {"nats://h:1/x?replicas=9", "replicas"},
      {"nats://h:1/x?nkey=UABC", "nkey and seed"},
      {"nats://h:1/x?tls=1&tls=0", "twice"},
      {"nats://a.b@h:1/x", "subject token"},
      {"nats://%zz@h:1/x", "%-escape"},
  };
  for (const auto& [input, reason] : cases) {
    auto parsed = Address::parse(input);
    ASSERT_FALSE(parsed) << input;
    EXPECT_EQ(parsed.error().code(), errc::invalid_argument) << input;
    EXPECT_NE(parsed.error().message().find(reason), std::string::npos) << input << ": " << parsed.error().message();
  }
}

// ---------------------------------------------------------------- one server

class NatsMailboxTest : public test::NatsServerTest {};

TEST_F(NatsMailboxTest, SendsReceivesAndAcksWithIdentityIdAndDeliveryCount) {
  auto mailbox = Mailbox::create(url("orders"));
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  auto receipt = mailbox->send(bytes("first"));
  ASSERT_TRUE(receipt) << receipt.error().message();
  EXPECT_FALSE(receipt->duplicate);
  EXPECT_EQ(receipt->sequence, 1u);

  auto message = mailbox->receive_for(5s);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text(message->data()), "first");
  EXPECT_EQ(message->sender(), "anonymous");
  EXPECT_EQ(message->message_id(), receipt->message_id);
  EXPECT_EQ(message->delivery_count(), 1u);
  EXPECT_EQ(message->sequence(), 1u);
  ASSERT_TRUE(message->ack());
  EXPECT_EQ(message->ack().error().code(), errc::invalid_argument);  // settled once

  auto stats = mailbox->stats();
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(stats->stored, 0u);  // work queue: acked is gone
  EXPECT_EQ(stats->stream, "FERRY_MBX_orders");
  ASSERT_EQ(stats->levels.size(), 4u);

  auto none = mailbox->try_receive();
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(none->has_value());
  const auto before = steady_clock::now();
  auto late = mailbox->receive_for(200ms);
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code(), errc::timed_out);
  EXPECT_GE(steady_clock::now() - before, 200ms);
}

TEST_F(NatsMailboxTest, CreateOpenAndDestroyReportWhatIsThere) {
  EXPECT_EQ(Mailbox::open(url("missing")).error().code(), errc::not_found);
  EXPECT_EQ(Mailbox::destroy(url("missing")).error().code(), errc::not_found);
  ASSERT_TRUE(Mailbox::create(url("box")));
  EXPECT_EQ(Mailbox::create(url("box")).error().code(), errc::already_exists);
  auto opened = Mailbox::open(url("box"));
  ASSERT_TRUE(opened) << opened.error().message();
  EXPECT_EQ(opened->levels(), 4u);
  ASSERT_TRUE(Mailbox::open_or_create(url("box")));
  ASSERT_TRUE(Mailbox::destroy(url("box")));
  EXPECT_EQ(Mailbox::open(url("box")).error().code(), errc::not_found);

  EXPECT_EQ(Mailbox::create(url("bad"), {.levels = 0}).error().code(), errc::invalid_argument);
  EXPECT_EQ(Mailbox::create(url("bad"), {.max_message = std::size_t{64} << 20}).error().code(), errc::invalid_argument);
  EXPECT_EQ(Mailbox::create(url("bad"), {.max_deliver = 3}).error().code(), errc::invalid_argument);
  EXPECT_EQ(Mailbox::open("nats://127.0.0.1:1/x?timeout_ms=200").error().code(), errc::peer_gone);
}

TEST_F(NatsMailboxTest, ABadMessageIsRefusedAndNothingIsStored) {
  auto mailbox = Mailbox::create(url("small"), {.max_message = 16});
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  const std::string big(17, 'x');
  EXPECT_EQ(mailbox->send(bytes(big)).error().code(), errc::invalid_argument);
  EXPECT_EQ(mailbox->send(bytes("x"), {.priority = 32}).error().code(), errc::invalid_argument);
  EXPECT_EQ(mailbox->stats()->stored, 0u);
}

TEST_F(NatsMailboxTest, HigherBandsAreServedFirst) {
  auto mailbox = Mailbox::create(url("prio"), {.levels = 4});
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  // Priority 9 shares the top band with 3 and keeps its own number.
  for (const unsigned priority : {0u, 2u, 9u, 1u, 3u, 0u}) {
    ASSERT_TRUE(mailbox->send(bytes("p" + std::to_string(priority)), {.priority = priority}));
  }
  std::vector<std::string> order;
  for (int i = 0; i < 6; ++i) {
    auto message = mailbox->receive_for(5s);
    ASSERT_TRUE(message) << message.error().message();
    order.push_back(text(message->data()) + "/" + std::to_string(message->priority()));
    ASSERT_TRUE(message->ack());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"p9/9", "p3/3", "p2/2", "p1/1", "p0/0", "p0/0"}));
}

TEST_F(NatsMailboxTest, ARetriedSendWithTheSameIdIsStoredOnce) {
  auto mailbox = Mailbox::create(url("dedup"));
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  auto first = mailbox->send(bytes("once"), {.message_id = "order-17"});
  auto again = mailbox->send(bytes("once"), {.message_id = "order-17"});
  ASSERT_TRUE(first && again);
  EXPECT_FALSE(first->duplicate);
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->sequence, first->sequence);
  auto message = mailbox->receive_for(5s);
  ASSERT_TRUE(message);
  EXPECT_EQ(message->message_id(), "order-17");
  ASSERT_TRUE(message->ack());
  EXPECT_FALSE(mailbox->try_receive()->has_value());
}

TEST_F(NatsMailboxTest, NackGivesTheMessageBackAtOnceAndDroppingALeaseNacksIt) {
  auto sender = Mailbox::create(url("nack"), {.lease = 60s});  // only a nack can bring it back in time
  auto receiver = Mailbox::open(url("nack"));
  ASSERT_TRUE(sender && receiver);
  ASSERT_TRUE(sender->send(bytes("again")));
  {
    auto message = receiver->receive_for(5s);
    ASSERT_TRUE(message);
    EXPECT_EQ(message->delivery_count(), 1u);
    ASSERT_TRUE(message->nack());
  }
  {
    auto message = receiver->receive_for(5s);
    ASSERT_TRUE(message) << message.error().message();
    EXPECT_EQ(text(message->data()), "again");
    EXPECT_EQ(message->delivery_count(), 2u);
  }  // dropped unsettled: nacked
  auto message = receiver->receive_for(5s);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(message->delivery_count(), 3u);
  ASSERT_TRUE(message->ack());
}

TEST_F(NatsMailboxTest, AnExpiredLeaseGoesToTheNextReceiverAndInProgressKeepsIt) {
  auto first = Mailbox::create(url("lease"), {.lease = 400ms});
  auto second = Mailbox::open(url("lease"));
  ASSERT_TRUE(first && second);
  ASSERT_TRUE(first->send(bytes("kept")));
  auto held = first->receive_for(5s);
  ASSERT_TRUE(held);
  // Renewed every 150 ms for a second: nobody else gets it meanwhile.
  for (int i = 0; i < 7; ++i) {
    std::this_thread::sleep_for(150ms);
    ASSERT_TRUE(held->in_progress());
    auto other = second->try_receive();
    ASSERT_TRUE(other);
    EXPECT_FALSE(other->has_value());
  }
  // Left alone, the lease runs out and the next receiver has it.
  auto taken = second->receive_for(10s);
  ASSERT_TRUE(taken) << taken.error().message();
  EXPECT_EQ(text(taken->data()), "kept");
  EXPECT_EQ(taken->delivery_count(), 2u);
  ASSERT_TRUE(taken->ack());
}

// Receivers closed while the doorbell rings for them, the path on which
// nats.c 3.4 could free a doorbell subscription under its reader thread
// (nats-io/nats.c#637; seen once by the TSan build; its window is too narrow
// to provoke here, this runs the path): every message sent is then taken or
// still stored.
TEST_F(NatsMailboxTest, ReceiversClosedWhileTheirDoorbellRingsLoseNothing) {
  auto sender = Mailbox::create(url("bells"));
  ASSERT_TRUE(sender) << sender.error().message();
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> sent{0};
  std::thread ringing([&] {
    while (!stop) {
      if (sender->send_for(bytes("ring"), 100ms)) ++sent;  // each send rings the doorbell
    }
  });
  std::uint64_t taken = 0;
  for (std::size_t round = 0; round < test::scaled(40) && !HasFailure(); ++round) {
    auto receiver = Mailbox::open(url("bells"));
    EXPECT_TRUE(receiver) << receiver.error().message();
    if (!receiver) break;
    auto message = receiver->receive_for(5s);  // subscribes to the doorbell
    EXPECT_TRUE(message) << message.error().message();
    if (message && message->ack()) ++taken;
  }  // each receiver closes here, its doorbell ringing
  stop = true;
  ringing.join();
  auto stats = sender->stats();
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(taken + stats->stored, sent.load());
}

TEST_F(NatsMailboxTest, APoisonMessageGoesToTheDeadLetterMailbox) {
  auto mailbox = Mailbox::create(url("work"), {.lease = 60s, .max_deliver = 2, .dead_letter = "work-dead"});
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  auto receipt = mailbox->send(bytes("poison"), {.priority = 1});
  ASSERT_TRUE(receipt);
  for (std::uint64_t delivery = 1; delivery <= 2; ++delivery) {
    auto message = mailbox->receive_for(5s);
    ASSERT_TRUE(message) << message.error().message();
    EXPECT_EQ(message->delivery_count(), delivery);
    ASSERT_TRUE(message->nack());
  }
  auto third = mailbox->receive_for(500ms);  // delivered a third time: buried instead
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code(), errc::timed_out);
  EXPECT_EQ(mailbox->stats()->stored, 0u);

  auto dead = Mailbox::open(url("work-dead"));
  ASSERT_TRUE(dead) << dead.error().message();
  auto buried = dead->receive_for(5s);
  ASSERT_TRUE(buried) << buried.error().message();
  EXPECT_EQ(text(buried->data()), "poison");
  EXPECT_EQ(buried->message_id(), receipt->message_id);
  EXPECT_EQ(buried->priority(), 1u);
  EXPECT_EQ(buried->header("Ferry-Original-Sender"), "anonymous");
  EXPECT_EQ(buried->header("Ferry-Deliveries"), "3");
  ASSERT_TRUE(buried->ack());
}

TEST_F(NatsMailboxTest, AFullMailboxMakesSendWaitAndTrySendRefuse) {
  auto mailbox = Mailbox::create(url("full"), {.capacity = 2});
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  ASSERT_TRUE(mailbox->try_send(bytes("a")));
  ASSERT_TRUE(mailbox->try_send(bytes("b")));
  EXPECT_EQ(mailbox->try_send(bytes("c")).error().code(), errc::would_block);
  EXPECT_EQ(mailbox->send_for(bytes("c"), 200ms).error().code(), errc::timed_out);

  // A waiting send goes through once a receiver makes room.
  auto receiver = Mailbox::open(url("full"));
  ASSERT_TRUE(receiver);
  std::thread drain([&] {
    std::this_thread::sleep_for(200ms);
    auto message = receiver->receive_for(5s);
    if (message) (void)message->ack();
  });
  auto sent = mailbox->send_for(bytes("c"), 10s);
  drain.join();
  ASSERT_TRUE(sent) << sent.error().message();
  EXPECT_EQ(mailbox->stats()->stored, 2u);
}

TEST_F(NatsMailboxTest, StoredMessagesOutliveAServerRestart) {
  {
    auto mailbox = Mailbox::create(url("durable"));
    ASSERT_TRUE(mailbox);
    ASSERT_TRUE(mailbox->send(bytes("survivor")));
  }
  server_->kill();
  ASSERT_TRUE(server_->restart()) << server_->log();
  auto mailbox = Mailbox::open(url("durable"));
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  auto message = mailbox->receive_for(10s);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text(message->data()), "survivor");
  ASSERT_TRUE(message->ack());
}

// ---------------------------------------------------------------- identity

// Each user may publish mailbox messages only on subjects ending in its own
// name (docs/nats.md): the subject a message arrives on proves its sender.
test::NatsUser mailbox_user(const std::string& name) {
  return {.name = name,
          .password = name + "-pw",
          .publish = {"ferry.mbx.*.*." + name, "ferry.bell.>", "$JS.API.>", "$JS.ACK.>", "_INBOX.>"},
          .subscribe = {}};
}

// A message `from` sends arrives at `to` attributed to `name`.
void expect_attributed(Mailbox& from, Mailbox& to, const std::string& name) {
  ASSERT_TRUE(from.send(bytes("from " + name)));
  auto message = to.receive_for(5s);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text(message->data()), "from " + name);
  EXPECT_EQ(message->sender(), name);
  ASSERT_TRUE(message->ack());
}

// A client at `address`, which claims a name its login may not send as: the
// server drops its publish, and send() says why.
void expect_impersonation_refused(const std::string& address) {
  // The login itself is valid and may connect. With a credentials file the
  // connect was refused now and then ("Authorization Violation" for the
  // credentials another connection of the test had just used: twice in CI,
  // once in ~120 local runs; cause not found, nats.c 3.4 or the server):
  // up to three tries. The refusal this checks comes after the connect.
  auto impostor = Mailbox::open(address);
  for (int attempt = 1; attempt < 3 && !impostor && impostor.error().code() == errc::permission_denied; ++attempt) {
    impostor = Mailbox::open(address);
  }
  ASSERT_TRUE(impostor) << impostor.error().message();
  auto forged = impostor->send_for(bytes("forged"), 2s);
  ASSERT_FALSE(forged);
  EXPECT_EQ(forged.error().code(), errc::permission_denied) << forged.error().message();
}

TEST(NatsMailboxIdentity, TheServerAttestsTheSenderAndRefusesImpersonation) {
  auto server = NatsServer::start({.users = {mailbox_user("alice"), mailbox_user("bob")}});
  ASSERT_NE(server, nullptr);
  const std::string host = server->url().substr(std::string_view("nats://").size());
  const auto as = [&](std::string_view user, std::string_view options = "") {
    return "nats://" + std::string(user) + ":" + std::string(user) + "-pw@" + host + "/shared" +
           (options.empty() ? "" : "?" + std::string(options));
  };
  auto alice = Mailbox::create(as("alice"));
  ASSERT_TRUE(alice) << alice.error().message();
  auto bob = Mailbox::open(as("bob"));
  ASSERT_TRUE(bob) << bob.error().message();
  ASSERT_TRUE(alice->send(bytes("from alice")));
  ASSERT_TRUE(bob->send(bytes("from bob")));

  expect_impersonation_refused(as("bob", "as=alice&timeout_ms=500"));  // bob claiming to be alice

  std::map<std::string, std::string> seen;
  for (;;) {
    auto message = alice->receive_for(500ms);
    if (!message) {
      EXPECT_EQ(message.error().code(), errc::timed_out);
      break;
    }
    seen[text(message->data())] = message->sender();
    ASSERT_TRUE(message->ack());
  }
  EXPECT_EQ(seen, (std::map<std::string, std::string>{{"from alice", "alice"}, {"from bob", "bob"}}));

  auto wrong = Mailbox::open("nats://alice:guess@" + host + "/shared");
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), errc::permission_denied) << wrong.error().message();
}

// An NKey user (nkey=PUBLIC&seed=FILE) signs the server's challenge with its
// seed: no password travels. Its permissions attest it as they do a
// password user's; a wrong seed or an unreadable seed file is refused.
TEST(NatsMailboxIdentity, AnNkeyUserSignsInWithItsSeedAndIsAttestedByTheServer) {
  test::TempDir files;
  const test::NatsNkey carol_key = test::make_user_nkey(files.file("carol.nk"));
  const test::NatsNkey stranger_key = test::make_user_nkey(files.file("stranger.nk"));
  ASSERT_FALSE(carol_key.public_key.empty());
  ASSERT_FALSE(stranger_key.public_key.empty());
  ASSERT_EQ(carol_key.public_key.size(), 56u);
  ASSERT_EQ(carol_key.public_key[0], 'U');
  ASSERT_NE(carol_key.public_key, stranger_key.public_key);

  test::NatsUser carol_login = mailbox_user("carol");
  carol_login.nkey = carol_key.public_key;
  auto server = NatsServer::start({.users = {mailbox_user("alice"), carol_login}});
  ASSERT_NE(server, nullptr);
  const std::string host = server->url().substr(std::string_view("nats://").size());
  // Carol's key, the seed from `seed_file`, sending as `as`.
  const auto by_key = [&](const std::string& seed_file, std::string_view as, std::string_view more = "") {
    return "nats://" + host + "/shared?nkey=" + carol_key.public_key + "&seed=" + seed_file + "&as=" +
           std::string(as) + std::string(more);
  };

  auto alice = Mailbox::create("nats://alice:alice-pw@" + host + "/shared");
  ASSERT_TRUE(alice) << alice.error().message();
  auto carol = Mailbox::open(by_key(carol_key.seed_file, "carol"));
  ASSERT_TRUE(carol) << carol.error().message();
  expect_attributed(*carol, *alice, "carol");
  // Signed in by key, carol still may not send as alice.
  expect_impersonation_refused(by_key(carol_key.seed_file, "alice", "&timeout_ms=500"));
  auto nothing = alice->receive_for(300ms);
  ASSERT_FALSE(nothing);
  EXPECT_EQ(nothing.error().code(), errc::timed_out);

  // Carol's public key with another key's seed: the signature does not verify.
  auto wrong_seed = Mailbox::open(by_key(stranger_key.seed_file, "carol", "&timeout_ms=1000"));
  ASSERT_FALSE(wrong_seed);
  EXPECT_EQ(wrong_seed.error().code(), errc::permission_denied) << wrong_seed.error().message();
  auto no_seed = Mailbox::open(by_key(files.file("missing.nk"), "carol", "&timeout_ms=1000"));
  ASSERT_FALSE(no_seed);
  EXPECT_NE(no_seed.error().message().find("missing.nk"), std::string::npos) << no_seed.error().message();
}

// Decentralized authentication: an operator, an account and users with
// credentials files (creds=FILE). The user JWT's permissions, signed by the
// account, attest the sender as a server's own user list does.
TEST(NatsMailboxIdentity, ACredentialsFileUserIsAttestedByTheServer) {
  test::TempDir files;
  auto trust = test::NatsOperator::make(files);
  ASSERT_NE(trust, nullptr);
  const std::string admin = trust->user_credentials("admin", {}, {});
  const std::string dave = trust->user_credentials("dave", mailbox_user("dave").publish, {});
  ASSERT_FALSE(admin.empty());
  ASSERT_FALSE(dave.empty());
  // Credentials that no account of this server signed. (Keys are made before
  // any connection: openssl runs in a child, and nats.c's threads should
  // not be there when the test forks.)
  test::TempDir elsewhere;
  auto other = test::NatsOperator::make(elsewhere);
  ASSERT_NE(other, nullptr);
  const std::string stranger = other->user_credentials("dave", {}, {});
  ASSERT_FALSE(stranger.empty());
  auto server = NatsServer::start({.operator_config = trust->server_config(), .probe_credentials = admin});
  ASSERT_NE(server, nullptr);
  const std::string base = server->url() + "/shared?creds=";

  auto receiver = Mailbox::create(base + admin + "&as=admin");
  ASSERT_TRUE(receiver) << receiver.error().message();
  auto sender = Mailbox::open(base + dave + "&as=dave");
  ASSERT_TRUE(sender) << sender.error().message();
  expect_attributed(*sender, *receiver, "dave");
  expect_impersonation_refused(base + dave + "&as=admin&timeout_ms=500");

  auto refused = Mailbox::open(base + stranger + "&as=dave&timeout_ms=1000");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), errc::permission_denied) << refused.error().message();
  auto missing = Mailbox::open(base + files.file("missing.creds") + "&as=dave&timeout_ms=1000");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("missing.creds"), std::string::npos) << missing.error().message();
}

// ---------------------------------------------------------------- TLS

// A server that requires TLS: with tls_ca (the address option passed through
// to nats.c) the mailbox works; without TLS, or trusting nothing, it does not.
TEST(NatsMailboxTls, TheTlsOptionsReachTheClientAndAPlainClientIsRefused) {
  test::TempDir files;
  const std::string certificate = files.file("cert.pem");
  const std::string key = files.file("key.pem");
  const std::string make = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext "
                           "subjectAltName=IP:127.0.0.1 -keyout " + key + " -out " + certificate + " 2>/dev/null";
  ASSERT_EQ(std::system(make.c_str()), 0) << "openssl (Debian: openssl) makes the test certificate";
  auto server = NatsServer::start({.tls_certificate = certificate, .tls_key = key});
  ASSERT_NE(server, nullptr);
  const std::string base = server->url() + "/secure";

  auto mailbox = Mailbox::open_or_create(base + "?tls_ca=" + certificate);
  ASSERT_TRUE(mailbox) << mailbox.error().message();
  ASSERT_TRUE(mailbox->send(bytes("sealed")));
  auto message = mailbox->receive_for(5s);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text(message->data()), "sealed");
  ASSERT_TRUE(message->ack());

  auto plain = Mailbox::open(base + "?timeout_ms=1000");
  ASSERT_FALSE(plain);
  EXPECT_EQ(plain.error().code(), errc::invalid_argument) << plain.error().message();
  auto untrusted = Mailbox::open(base + "?tls=1&timeout_ms=1000");  // TLS, but the system's authorities do not know it
  ASSERT_FALSE(untrusted);
  EXPECT_EQ(untrusted.error().code(), errc::invalid_argument) << untrusted.error().message();
  EXPECT_EQ(Mailbox::open(base + "?tls_ca=/nonexistent.pem").error().code(), errc::invalid_argument);
}

// ---------------------------------------------------------------- processes

std::vector<std::pair<std::string, std::uint64_t>> read_receipts(const std::string& path) {
  std::vector<std::pair<std::string, std::uint64_t>> lines;
  std::ifstream in(path);
  std::string id;
  std::uint64_t deliveries = 0;
  while (in >> id >> deliveries) lines.emplace_back(id, deliveries);
  return lines;
}

TEST_F(NatsMailboxTest, TwoReceiverProcessesGetEveryMessageOnce) {
  const std::size_t count = test::scaled(10'000);
  ASSERT_TRUE(Mailbox::create(url("bulk"), {.lease = 30s}));
  test::TempDir files;
  test::Child sender = test::Child::exec(FERRY_NATS_PEER, {"send", url("bulk"), std::to_string(count), "m"});
  std::vector<test::Child> receivers;
  for (int i = 0; i < 2; ++i) {
    receivers.push_back(test::Child::exec(FERRY_NATS_PEER, {"drain", url("bulk"), files.file("r" + std::to_string(i)), "3000"}));
  }
  ASSERT_EQ(sender.wait_for(120s), 0);
  std::map<std::string, int> times;
  std::size_t duplicates = 0;
  std::size_t per_receiver[2] = {};
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(receivers[static_cast<std::size_t>(i)].wait_for(120s), 0);
    for (const auto& [id, deliveries] : read_receipts(files.file("r" + std::to_string(i)))) {
      if (++times[id] > 1) ++duplicates;
      ++per_receiver[i];
    }
  }
  // At-least-once with ids: after de-duplication every message exactly once.
  EXPECT_EQ(times.size(), count);
  for (std::size_t i = 0; i < count; ++i) EXPECT_TRUE(times.contains("m-" + std::to_string(i))) << i;
  EXPECT_EQ(duplicates, 0u) << "no receiver died and leases were long: nothing should come twice";
  EXPECT_GT(per_receiver[0], 0u);
  EXPECT_GT(per_receiver[1], 0u);
}

TEST_F(NatsMailboxTest, AReceiverKilledHoldingALeaseLosesTheMessageToAnother) {
  auto mailbox = Mailbox::create(url("crash"), {.lease = 500ms});
  ASSERT_TRUE(mailbox);
  auto receipt = mailbox->send(bytes("orphan"));
  ASSERT_TRUE(receipt);
  test::TempDir files;
  test::Child holder = test::Child::exec(FERRY_NATS_PEER, {"hold", url("crash"), files.file("held")});
  // Wait until the holder has it, then kill it without a chance to nack.
  const auto until = steady_clock::now() + 30s;
  while (read_receipts(files.file("held")).empty() && steady_clock::now() < until) std::this_thread::sleep_for(10ms);
  const auto held = read_receipts(files.file("held"));
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0], std::make_pair(receipt->message_id, std::uint64_t{1}));
  holder.kill(SIGKILL);
  EXPECT_EQ(holder.wait(), 128 + SIGKILL);

  auto message = mailbox->receive_for(10s);
  ASSERT_TRUE(message) << message.error().message();
  EXPECT_EQ(text(message->data()), "orphan");
  EXPECT_EQ(message->message_id(), receipt->message_id);
  EXPECT_EQ(message->delivery_count(), 2u);
  ASSERT_TRUE(message->ack());
}

}  // namespace
}  // namespace ferry::nats
