// Which network addresses outgoing HTTP (webhook deliveries) may connect to,
// so that a URL someone registers cannot reach inside the network (SSRF):
// the loopback, private networks, link-local ones with the cloud metadata
// service at 169.254.169.254, and the like.
//
//   http::AddressPolicy policy;                  // public addresses only
//   RETURN_IF_ERROR(policy.Allow("10.1.0.0/16"));  // and this network
//   RETURN_IF_ERROR(http::CheckUrl("https://hooks.example.com/x", policy));
//
// Refused by default (an allow-list entry that contains the address wins):
//   IPv4: 0.0.0.0/8 ("this network"), 10/8, 100.64/10 (CGNAT), 127/8,
//   169.254/16 (link-local, metadata), 172.16/12, 192.0.0/24, 192.0.2/24,
//   192.88.99/24, 192.168/16, 198.18/15 (benchmarking), 198.51.100/24,
//   203.0.113/24, 224/4 (multicast), 240/4 (reserved), 255.255.255.255.
//   IPv6: :: and ::1, fc00::/7 (unique local), fe80::/10 (link-local),
//   fec0::/10, ff00::/8 (multicast), fd00:ec2::254 (metadata), 100::/64,
//   2001::/32 (Teredo), 2001:db8::/32, 64:ff9b:1::/48. Addresses that embed
//   an IPv4 address are judged by it: ::ffff:0:0/96 (mapped), ::/96
//   (compatible), 64:ff9b::/96 (NAT64) and 2002::/16 (6to4).
//
// CheckUrl() is for accepting an endpoint. DNS may answer differently by
// the time of a delivery, so the HTTP client (framework/http/client.h)
// checks every address it connects to again.
//
// Thread-safety: a copyable value. Const methods may be called
// concurrently; Allow() needs external synchronization.
#ifndef FRAMEWORK_HTTP_ADDRESS_POLICY_H_
#define FRAMEWORK_HTTP_ADDRESS_POLICY_H_

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cqrs {
namespace http {

// An IPv4 or IPv6 network.
struct Cidr {
  int family = AF_INET;  // AF_INET or AF_INET6
  // Network byte order; the first 4 bytes for IPv4. Bits beyond
  // prefix_length are zero.
  std::array<uint8_t, 16> address{};
  int prefix_length = 0;

  // Whether `address` (4 bytes for AF_INET, 16 for AF_INET6) of `family` is
  // inside this network.
  bool Contains(int family, const uint8_t* address) const;
};

// Parses "10.0.0.0/8", "fd00::/8", or a bare address ("127.0.0.1" is
// /32, "::1" /128). Returns kInvalidArgument for anything else, a prefix
// length out of range, and bits set beyond the prefix ("10.0.0.1/8").
absl::StatusOr<Cidr> ParseCidr(absl::string_view cidr);

class AddressPolicy {
 public:
  // Refuses the ranges above; allows nothing extra.
  AddressPolicy() = default;

  // Allows every address in `cidr` (as ParseCidr() reads it), even one the
  // defaults refuse. Returns kInvalidArgument when `cidr` does not parse;
  // the policy is then unchanged.
  absl::Status Allow(absl::string_view cidr);

  // Whether a connection to `address` (AF_INET or AF_INET6; any other
  // family is refused) is allowed.
  bool Permits(const sockaddr* address) const;

  // As Permits(), for an IP address literal ("192.0.2.1", "::1", no
  // brackets). Returns kInvalidArgument when `ip` is not one, or when the
  // policy refuses it (the message names it and the flag that allows it).
  absl::Status CheckAddress(absl::string_view ip) const;

 private:
  bool PermitsBytes(int family, const uint8_t* address) const;

  std::vector<Cidr> allowed_;
};

// Checks a webhook endpoint URL before it is accepted. Returns
// kInvalidArgument, with a message for the person who entered it, when the
// URL is not absolute http or https, is longer than 2048 bytes, has
// userinfo (user:pass@), an empty host, a fragment, control characters,
// spaces or non-ASCII bytes; when its host does not resolve; or when
// any address the host resolves to is refused by `policy`. Blocks while
// the host name resolves (getaddrinfo).
absl::Status CheckUrl(absl::string_view url, const AddressPolicy& policy);

// The message of a refused address, shared by CheckUrl() and the client.
std::string RefusedAddressMessage(absl::string_view ip);

}  // namespace http
}  // namespace cqrs

#endif  // FRAMEWORK_HTTP_ADDRESS_POLICY_H_
