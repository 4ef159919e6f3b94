// The server's TLS context: a certificate chain and its private key read
// from PEM files, with the protocol settings every HTTPS listener gets.
//
//   ASSIGN_OR_RETURN(std::shared_ptr<boost::asio::ssl::context> context,
//                    http_internal::LoadServerTlsContext(cert, key));
//
// Settings: TLS 1.2 and 1.3 only; for TLS 1.2 ECDHE with AES-GCM or
// ChaCha20-Poly1305 (Mozilla's "intermediate" list without DHE), in the
// server's order; no compression, no renegotiation.
//
// Thread-safety: LoadServerTlsContext may be called from any thread. A
// context is not changed after it is returned, so any number of connections
// may use it at once.
#ifndef FRAMEWORK_HTTP_INTERNAL_TLS_CONTEXT_H_
#define FRAMEWORK_HTTP_INTERNAL_TLS_CONTEXT_H_

#include <memory>

#include <boost/asio/ssl/context.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cqrs {
namespace http_internal {

// Reads `cert_file` (PEM: the server's certificate first, then any
// intermediate ones) and `key_file` (PEM, unencrypted). Returns
// kInvalidArgument, with a message naming the file, when a file cannot be
// read, holds no PEM certificate or private key, or the key does not match
// the certificate. Messages never contain key material.
absl::StatusOr<std::shared_ptr<boost::asio::ssl::context>> LoadServerTlsContext(
    absl::string_view cert_file, absl::string_view key_file);

}  // namespace http_internal
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_INTERNAL_TLS_CONTEXT_H_
