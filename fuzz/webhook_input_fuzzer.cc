// Fuzzes what a client enters for a webhook endpoint: the URL, through
// integration::CheckWebhookUrlSyntax() (integration/webhook_store.h), which
// the store runs on every create and update, and the address checks of
// framework/http/address_policy.h: http::ParseCidr() (the --allow-address
// flag's values) and AddressPolicy::CheckAddress() with the default policy
// on the same bytes. http::CheckUrl() is left out: it resolves host names
// (getaddrinfo), which a fuzzer must not wait for.
//
// Properties: nothing crashes; an accepted URL starts with http:// or
// https://, holds no space, control character or userinfo; a parsed network
// keeps no bits beyond its prefix and contains its own address.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "framework/http/address_policy.h"
#include "integration/webhook_store.h"

namespace {

void Require(bool condition) {
  if (!condition) std::abort();
}

void CheckAcceptedUrl(absl::string_view url) {
  const std::string lower = absl::AsciiStrToLower(url.substr(0, 8));
  Require(absl::StartsWith(lower, "http://") ||
          absl::StartsWith(lower, "https://"));
  for (char c : url) {
    const unsigned char u = static_cast<unsigned char>(c);
    Require(u > 0x20 && u != 0x7f);
  }
  absl::string_view rest = url.substr(url.find("//") + 2);
  Require(!absl::StrContains(rest.substr(0, rest.find_first_of("/?#")), '@'));
}

void CheckCidr(const cqrs::http::Cidr& cidr) {
  const int bits = cidr.family == AF_INET ? 32 : 128;
  Require(cidr.family == AF_INET || cidr.family == AF_INET6);
  Require(cidr.prefix_length >= 0 && cidr.prefix_length <= bits);
  for (int bit = cidr.prefix_length; bit < bits; ++bit) {
    Require((cidr.address[bit / 8] & (0x80 >> (bit % 8))) == 0);
  }
  Require(cidr.Contains(cidr.family, cidr.address.data()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view input(reinterpret_cast<const char*>(data), size);
  if (cqrs::integration::CheckWebhookUrlSyntax(input).ok()) {
    CheckAcceptedUrl(input);
  }
  absl::StatusOr<cqrs::http::Cidr> cidr = cqrs::http::ParseCidr(input);
  if (cidr.ok()) CheckCidr(*cidr);
  static const cqrs::http::AddressPolicy* policy =
      new cqrs::http::AddressPolicy();
  (void)policy->CheckAddress(input);
  cqrs::http::AddressPolicy allowing;
  if (allowing.Allow(input).ok()) Require(cidr.ok());
  return 0;
}
