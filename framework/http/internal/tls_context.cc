#include "framework/http/internal/tls_context.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace cqrs {
namespace http_internal {
namespace {

namespace ssl = boost::asio::ssl;

// Mozilla's "intermediate" TLS 1.2 suites without DHE: forward secrecy and
// AEAD only. TLS 1.3 keeps OpenSSL's suites, which are all of that kind.
constexpr char kTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Files larger than this are no certificate or key.
constexpr long kMaxFileSize = 1 << 20;

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

// Holds a file's bytes and wipes them when done (the key file's are secret).
class FileBytes {
 public:
  FileBytes() = default;
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes() {
    if (!bytes_.empty()) OPENSSL_cleanse(&bytes_[0], bytes_.size());
  }

  // kInvalidArgument naming `path` when it cannot be read.
  absl::Status Read(absl::string_view what, const std::string& path) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (file == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read TLS ", what, " file ", path, ": ",
                       std::generic_category().message(errno)));
    }
    bytes_.resize(kMaxFileSize + 1);
    const size_t n = std::fread(&bytes_[0], 1, bytes_.size(), file);
    const bool failed = std::ferror(file) != 0;
    const int error = errno;
    std::fclose(file);
    if (failed) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot read TLS ", what, " file ", path, ": ",
                       std::generic_category().message(error)));
    }
    if (n > static_cast<size_t>(kMaxFileSize)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS ", what, " file ", path, " is larger than 1 MiB: not PEM"));
    }
    bytes_.resize(n);
    return absl::OkStatus();
  }

  BioPtr NewBio() const {
    return BioPtr(
        BIO_new_mem_buf(bytes_.data(), static_cast<int>(bytes_.size())));
  }

 private:
  std::string bytes_;
};

// Refuses encrypted PEM keys instead of prompting on the terminal.
int NoPassword(char*, int, int, void*) { return 0; }

// The reason of OpenSSL's most recent error on this thread, which is then
// cleared (it never holds key material).
std::string TakeOpensslError() {
  const unsigned long code = ERR_peek_last_error();
  std::string reason;
  if (code != 0) {
    const char* text = ERR_reason_error_string(code);
    reason = text != nullptr ? text : absl::StrCat("error ", code);
  } else {
    reason = "unknown error";
  }
  ERR_clear_error();
  return reason;
}

absl::Status Configure(SSL_CTX* native) {
  if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) {
    return absl::InternalError(
        absl::StrCat("cannot configure TLS: ", TakeOpensslError()));
  }
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION |
                                  SSL_OP_CIPHER_SERVER_PREFERENCE |
                                  SSL_OP_NO_RENEGOTIATION);
  return absl::OkStatus();
}

// The certificate first, then the rest of the chain.
absl::Status UseCertificateChain(SSL_CTX* native, const FileBytes& pem,
                                 const std::string& path) {
  BioPtr bio = pem.NewBio();
  if (bio == nullptr) return absl::ResourceExhaustedError("out of memory");
  X509Ptr leaf(PEM_read_bio_X509_AUX(bio.get(), nullptr, NoPassword, nullptr));
  if (leaf == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate file ", path,
                     " holds no PEM certificate (", TakeOpensslError(), ")"));
  }
  if (SSL_CTX_use_certificate(native, leaf.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate file ", path, ": certificate refused (",
                     TakeOpensslError(), ")"));
  }
  SSL_CTX_clear_chain_certs(native);
  for (;;) {
    X509Ptr next(PEM_read_bio_X509(bio.get(), nullptr, NoPassword, nullptr));
    if (next == nullptr) break;
    // add0 takes ownership only when it succeeds.
    if (SSL_CTX_add0_chain_cert(native, next.get()) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "TLS certificate file ", path, ": chain certificate refused (",
          TakeOpensslError(), ")"));
    }
    next.release();
  }
  // The loop ends at the end of the file ("no start line") or at a broken
  // certificate.
  const unsigned long last = ERR_peek_last_error();
  if (last != 0 && !(ERR_GET_LIB(last) == ERR_LIB_PEM &&
                     ERR_GET_REASON(last) == PEM_R_NO_START_LINE)) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate file ", path,
                     " holds a broken PEM certificate after the first (",
                     TakeOpensslError(), ")"));
  }
  ERR_clear_error();
  return absl::OkStatus();
}

absl::Status UsePrivateKey(SSL_CTX* native, const FileBytes& pem,
                           const std::string& path,
                           const std::string& cert_path) {
  BioPtr bio = pem.NewBio();
  if (bio == nullptr) return absl::ResourceExhaustedError("out of memory");
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassword, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TLS key file ", path, " holds no unencrypted PEM private key (",
        TakeOpensslError(), ")"));
  }
  if (SSL_CTX_use_PrivateKey(native, key.get()) != 1 ||
      SSL_CTX_check_private_key(native) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "TLS key file ", path, " does not match the certificate in ", cert_path,
        " (", TakeOpensslError(), ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<ssl::context>> LoadServerTlsContext(
    absl::string_view cert_file, absl::string_view key_file) {
  const std::string cert_path(cert_file);
  const std::string key_path(key_file);
  FileBytes cert_pem;
  absl::Status read = cert_pem.Read("certificate", cert_path);
  if (!read.ok()) return read;
  FileBytes key_pem;
  read = key_pem.Read("key", key_path);
  if (!read.ok()) return read;

  std::shared_ptr<ssl::context> context;
  try {
    context = std::make_shared<ssl::context>(ssl::context::tls_server);
  } catch (const std::exception& e) {
    ERR_clear_error();
    return absl::InternalError(
        absl::StrCat("cannot create a TLS context: ", e.what()));
  }
  SSL_CTX* native = context->native_handle();
  absl::Status status = Configure(native);
  if (status.ok()) status = UseCertificateChain(native, cert_pem, cert_path);
  if (status.ok()) status = UsePrivateKey(native, key_pem, key_path, cert_path);
  if (!status.ok()) return status;
  return context;
}

}  // namespace http_internal
}  // namespace cqrs
