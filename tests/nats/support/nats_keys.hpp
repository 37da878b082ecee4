// NATS identities made for the tests, as `nk` and `nsc` would make them:
// NKeys (Ed25519 key pairs in NATS's encoding) and, for decentralized
// authentication, an operator with one account whose users log in with
// credentials files (a user JWT signed by the account, and the user's seed).
//
// The Ed25519 keys and signatures come from the openssl command (Debian:
// openssl); the encodings are done here. NATS's encoding of a key: a type
// prefix (the first letter: O operator, A account, U user; S + letter for a
// seed), the 32 raw key bytes and a CRC-16, in base32 without padding.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ferry_test.hpp"

namespace ferry::test {

/// An NKey of any type: 'O'perator, 'A'ccount or 'U'ser.
struct NatsKeyPair {
  std::string public_key;   ///< the type letter and 55 more characters
  std::string seed;         ///< 'S', the type letter and 56 more: the secret
  std::string private_der;  ///< the same Ed25519 private key as a DER file, for openssl to sign with
};

/// A fresh key pair of `type`, its private key kept in `private_der`. On
/// failure: a gtest failure and an empty public_key.
NatsKeyPair make_nkey(char type, const std::string& private_der);

/// A user NKey.
struct NatsNkey {
  std::string public_key;  ///< "U…", 56 characters: goes into the server's config
  std::string seed_file;   ///< a file (mode 0600) holding the seed "SU…", 58 characters
};

/// A fresh user NKey, its seed written to `seed_file`. On failure: a gtest
/// failure and an empty public_key.
NatsNkey make_user_nkey(const std::string& seed_file);

/// An operator and one account with JetStream (no limits), plus the system
/// account JetStream needs, their keys and signed JWTs kept under a
/// directory; users of the account are added with credentials files.
class NatsOperator {
 public:
  /// Keys and JWTs under `directory`. On failure: a gtest failure and nullptr.
  static std::unique_ptr<NatsOperator> make(const TempDir& directory);

  /// The server's config lines: the operator JWT, the system account, a
  /// memory resolver and the two accounts' JWTs preloaded into it.
  std::string server_config() const;

  /// A user of the account named `name`, allowed to publish and subscribe to
  /// these subjects (empty: no restriction for that direction): the path of
  /// its credentials file, or "" after a gtest failure.
  std::string user_credentials(const std::string& name, const std::vector<std::string>& publish,
                               const std::vector<std::string>& subscribe);

 private:
  explicit NatsOperator(const TempDir& directory) : directory_(directory) {}

  const TempDir& directory_;
  NatsKeyPair operator_;
  NatsKeyPair account_;
  NatsKeyPair system_;  // the server's own account
  std::string operator_jwt_;
  std::string account_jwt_;
  std::string system_jwt_;
  int files_ = 0;
};

}  // namespace ferry::test
