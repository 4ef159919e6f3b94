#include "framework/http/address_policy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <curl/curl.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/types/optional.h"

namespace cqrs {
namespace http {
namespace {

constexpr size_t kMaxUrlLength = 2048;
constexpr absl::string_view kRefusedReason =
    "a private, loopback, link-local or metadata address; allow it with "
    "--webhook-allow-network CIDR";

// The ranges refused by default (see the header); addresses that embed an
// IPv4 address are handled by EmbeddedIpv4() before these are consulted.
const std::vector<Cidr>& DeniedNetworks() {
  static const std::vector<Cidr>* const denied = [] {
    auto* networks = new std::vector<Cidr>;
    for (const char* cidr : {
             "0.0.0.0/8",
             "10.0.0.0/8",
             "100.64.0.0/10",
             "127.0.0.0/8",
             "169.254.0.0/16",
             "172.16.0.0/12",
             "192.0.0.0/24",
             "192.0.2.0/24",
             "192.88.99.0/24",
             "192.168.0.0/16",
             "198.18.0.0/15",
             "198.51.100.0/24",
             "203.0.113.0/24",
             "224.0.0.0/4",
             "240.0.0.0/4",
             "255.255.255.255",
             "::/128",
             "::1/128",
             "fc00::/7",
             "fe80::/10",
             "fec0::/10",
             "ff00::/8",
             "fd00:ec2::254/128",
             "100::/64",
             "2001::/32",
             "2001:db8::/32",
             "64:ff9b:1::/48",
         }) {
      absl::StatusOr<Cidr> network = ParseCidr(cidr);
      // The literals above are valid; a typo would show in the unit tests.
      if (network.ok()) networks->push_back(*network);
    }
    return networks;
  }();
  return *denied;
}

// The IPv4 address inside an IPv6 one that carries it (mapped, compatible,
// NAT64 well-known prefix, 6to4), or nullptr.
const uint8_t* EmbeddedIpv4(const uint8_t* v6) {
  static constexpr uint8_t kZeros[12] = {};
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0,    0,
                                          0, 0, 0, 0, 0xff, 0xff};
  static constexpr uint8_t kNat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0,
                                         0, 0,    0,    0,    0, 0};
  if (std::memcmp(v6, kMapped, 12) == 0 || std::memcmp(v6, kZeros, 12) == 0 ||
      std::memcmp(v6, kNat64, 12) == 0) {
    return v6 + 12;
  }
  if (v6[0] == 0x20 && v6[1] == 0x02) return v6 + 2;  // 2002:AABB:CCDD::/48
  return nullptr;
}

// Parses an IPv4 or IPv6 literal into `cidr` (family and address).
bool ParseIp(absl::string_view ip, Cidr& cidr) {
  const std::string text(ip);
  if (::inet_pton(AF_INET, text.c_str(), cidr.address.data()) == 1) {
    cidr.family = AF_INET;
    return true;
  }
  if (::inet_pton(AF_INET6, text.c_str(), cidr.address.data()) == 1) {
    cidr.family = AF_INET6;
    return true;
  }
  return false;
}

std::string FormatIp(int family, const void* address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (::inet_ntop(family, address, text, sizeof(text)) == nullptr) {
    return "(unprintable address)";
  }
  return text;
}

// Owns a CURLU handle.
struct CurlUrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};

// One part of `url`, or nullopt when it is absent (or cannot be read).
absl::optional<std::string> UrlPart(CURLU* url, CURLUPart part) {
  char* value = nullptr;
  if (curl_url_get(url, part, &value, 0) != CURLUE_OK || value == nullptr) {
    return absl::nullopt;
  }
  std::string copy(value);
  curl_free(value);
  return copy;
}

// `why` follows "webhook URL" (with its own leading space or colon).
absl::Status BadUrl(absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("webhook URL", why));
}

}  // namespace

bool Cidr::Contains(int other_family, const uint8_t* other) const {
  if (other_family != family) return false;
  const int full_bytes = prefix_length / 8;
  if (std::memcmp(address.data(), other, full_bytes) != 0) return false;
  const int rest = prefix_length % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (other[full_bytes] & mask) == address[full_bytes];
}

absl::StatusOr<Cidr> ParseCidr(absl::string_view text) {
  absl::string_view ip = text;
  absl::string_view prefix;
  if (size_t slash = text.find('/'); slash != absl::string_view::npos) {
    ip = text.substr(0, slash);
    prefix = text.substr(slash + 1);
  }
  Cidr cidr;
  if (!ParseIp(ip, cidr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" is not an IP address or CIDR (10.0.0.0/8, ::1/128)"));
  }
  const int max_length = cidr.family == AF_INET ? 32 : 128;
  cidr.prefix_length = max_length;
  if (text.find('/') != absl::string_view::npos) {
    // Digits only: SimpleAtoi would also take "+8" or " 8".
    if (prefix.empty() || prefix.size() > 3 ||
        !std::all_of(prefix.begin(), prefix.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(prefix, &cidr.prefix_length) ||
        cidr.prefix_length > max_length) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", text, "\" has no valid prefix length (0 to ", max_length, ")"));
    }
  }
  Cidr network = cidr;
  const int bytes = max_length / 8;
  for (int i = 0; i < bytes; ++i) {
    const int bits_kept = std::min(8, std::max(0, cidr.prefix_length - i * 8));
    network.address[i] &= static_cast<uint8_t>(0xff00 >> bits_kept);
  }
  if (network.address != cidr.address) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", text, "\" has bits set beyond its prefix; did you mean ",
        FormatIp(cidr.family, network.address.data()), "/", cidr.prefix_length,
        "?"));
  }
  return network;
}

absl::Status AddressPolicy::Allow(absl::string_view cidr) {
  absl::StatusOr<Cidr> network = ParseCidr(cidr);
  if (!network.ok()) return network.status();
  allowed_.push_back(*network);
  return absl::OkStatus();
}

bool AddressPolicy::PermitsBytes(int family, const uint8_t* address) const {
  for (const Cidr& network : allowed_) {
    if (network.Contains(family, address)) return true;
  }
  if (family == AF_INET6) {
    if (const uint8_t* v4 = EmbeddedIpv4(address)) {
      return PermitsBytes(AF_INET, v4);
    }
  }
  for (const Cidr& network : DeniedNetworks()) {
    if (network.Contains(family, address)) return false;
  }
  return true;
}

bool AddressPolicy::Permits(const sockaddr* address) const {
  if (address == nullptr) return false;
  switch (address->sa_family) {
    case AF_INET: {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
      return PermitsBytes(AF_INET,
                          reinterpret_cast<const uint8_t*>(&v4->sin_addr));
    }
    case AF_INET6: {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
      return PermitsBytes(AF_INET6,
                          reinterpret_cast<const uint8_t*>(&v6->sin6_addr));
    }
    default:
      return false;
  }
}

absl::Status AddressPolicy::CheckAddress(absl::string_view ip) const {
  Cidr parsed;
  if (!ParseIp(ip, parsed)) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", ip, "\" is not an IP address"));
  }
  if (!PermitsBytes(parsed.family, parsed.address.data())) {
    return absl::InvalidArgumentError(RefusedAddressMessage(ip));
  }
  return absl::OkStatus();
}

std::string RefusedAddressMessage(absl::string_view ip) {
  return absl::StrCat(ip, " is ", kRefusedReason);
}

absl::Status CheckUrl(absl::string_view url, const AddressPolicy& policy) {
  if (url.size() > kMaxUrlLength) {
    return BadUrl(absl::StrCat(" is longer than ", kMaxUrlLength, " bytes"));
  }
  for (char c : url) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f) {
      return BadUrl(
          " contains a space, a control character or a non-ASCII byte "
          "(percent-encode it)");
    }
  }
  std::unique_ptr<CURLU, CurlUrlDeleter> parsed(curl_url());
  if (parsed == nullptr) return absl::ResourceExhaustedError("curl_url()");
  const std::string text(url);
  if (CURLUcode code = curl_url_set(parsed.get(), CURLUPART_URL, text.c_str(),
                                    CURLU_NON_SUPPORT_SCHEME);
      code != CURLUE_OK) {
    if (code == CURLUE_NO_HOST) return BadUrl(" has an empty host");
    return BadUrl(absl::StrCat(" is not an absolute http or https URL (",
                               curl_url_strerror(code), ")"));
  }
  const absl::optional<std::string> scheme =
      UrlPart(parsed.get(), CURLUPART_SCHEME);
  if (!scheme.has_value() || (absl::AsciiStrToLower(*scheme) != "http" &&
                              absl::AsciiStrToLower(*scheme) != "https")) {
    return BadUrl(" must start with http:// or https://");
  }
  // libcurl reads "http:///x" as host "x", so an empty authority is caught
  // here.
  if (size_t authority = url.find("://");
      authority != absl::string_view::npos) {
    absl::string_view rest = url.substr(authority + 3);
    rest = rest.substr(0, rest.find_first_of("/?#"));
    if (size_t at = rest.rfind('@'); at != absl::string_view::npos) {
      rest.remove_prefix(at + 1);
    }
    if (rest.empty() || rest[0] == ':') return BadUrl(" has an empty host");
  }
  if (UrlPart(parsed.get(), CURLUPART_USER).has_value() ||
      UrlPart(parsed.get(), CURLUPART_PASSWORD).has_value()) {
    return BadUrl(
        " must not contain a user name or password (user:pass@); send "
        "credentials in a header");
  }
  // An empty fragment ("x#") may not show as a part.
  if (UrlPart(parsed.get(), CURLUPART_FRAGMENT).has_value() ||
      url.find('#') != absl::string_view::npos) {
    return BadUrl(" must not contain a fragment (#...)");
  }
  const std::string host_part =
      UrlPart(parsed.get(), CURLUPART_HOST).value_or("");
  absl::string_view host = host_part;
  // An IPv6 literal comes back in brackets.
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  if (host.empty()) return BadUrl(" has an empty host");

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  const std::string host_text(host);
  if (int error = ::getaddrinfo(host_text.c_str(), nullptr, &hints, &results);
      error != 0) {
    return BadUrl(absl::StrCat(" host ", host, " does not resolve (",
                               ::gai_strerror(error), ")"));
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> owned(results, ::freeaddrinfo);
  for (const addrinfo* entry = results; entry != nullptr;
       entry = entry->ai_next) {
    if (policy.Permits(entry->ai_addr)) continue;
    std::string ip = "(unprintable address)";
    if (entry->ai_family == AF_INET) {
      ip = FormatIp(AF_INET,
                    &reinterpret_cast<sockaddr_in*>(entry->ai_addr)->sin_addr);
    } else if (entry->ai_family == AF_INET6) {
      ip =
          FormatIp(AF_INET6,
                   &reinterpret_cast<sockaddr_in6*>(entry->ai_addr)->sin6_addr);
    }
    if (ip == host) {
      return BadUrl(absl::StrCat(": ", RefusedAddressMessage(ip)));
    }
    return BadUrl(absl::StrCat(" host ", host, " resolves to ", ip,
                               ", which is ", kRefusedReason));
  }
  return absl::OkStatus();
}

}  // namespace http
}  // namespace cqrs
