#include "framework/http/address_policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

#include <catch2/catch.hpp>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cqrs {
namespace http {
namespace {

bool Permitted(const AddressPolicy& policy, const std::string& ip) {
  const absl::Status status = policy.CheckAddress(ip);
  INFO(ip << ": " << status.ToString());
  REQUIRE((status.ok() || status.code() == absl::StatusCode::kInvalidArgument));
  return status.ok();
}

TEST_CASE("AddressPolicy refuses internal addresses by default", "[http]") {
  const AddressPolicy policy;
  for (const char* ip : {
           "127.0.0.1",
           "127.255.255.254",
           "0.0.0.0",
           "0.1.2.3",
           "10.0.0.1",
           "10.255.255.255",
           "172.16.0.1",
           "172.31.255.255",
           "192.168.1.1",
           "169.254.169.254",
           "169.254.0.1",
           "100.64.0.1",
           "100.127.255.255",
           "198.18.0.1",
           "198.19.255.255",
           "224.0.0.1",
           "239.255.255.250",
           "240.0.0.1",
           "255.255.255.255",
           "::",
           "::1",
           "fc00::1",
           "fd12:3456::1",
           "fe80::1",
           "febf::1",
           "ff02::1",
           "fd00:ec2::254",
           "::ffff:127.0.0.1",
           "::ffff:169.254.169.254",
           "::ffff:10.0.0.1",
           "::127.0.0.1",
           "64:ff9b::7f00:1",
           "64:ff9b::a9fe:a9fe",
           "2002:7f00:1::1",
           "2002:a9fe:a9fe::",
           "2002:c0a8:101::1",
       }) {
    CHECK_FALSE(Permitted(policy, ip));
  }
}

TEST_CASE("AddressPolicy permits public addresses", "[http]") {
  const AddressPolicy policy;
  for (const char* ip : {
           "8.8.8.8",
           "1.1.1.1",
           "93.184.216.34",
           "172.15.255.255",
           "172.32.0.1",
           "100.63.255.255",
           "100.128.0.1",
           "198.17.255.255",
           "198.20.0.1",
           "169.253.255.255",
           "223.255.255.255",
           "2606:4700:4700::1111",
           "2a00:1450:4001:80b::200e",
           "::ffff:8.8.8.8",
           "64:ff9b::808:808",
           "2002:808:808::1",
       }) {
    CHECK(Permitted(policy, ip));
  }
}

TEST_CASE("A refused address's message names it and the flag", "[http]") {
  const AddressPolicy policy;
  const absl::Status status = policy.CheckAddress("169.254.169.254");
  CHECK(status.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(status.message(), "169.254.169.254"));
  CHECK(absl::StrContains(status.message(),
                          "private, loopback, link-local or metadata address; "
                          "allow it with --webhook-allow-network CIDR"));
  CHECK(policy.CheckAddress("not-an-ip").code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(policy.CheckAddress("[::1]").code() ==
        absl::StatusCode::kInvalidArgument);
}

TEST_CASE("An allowed network wins over the refused ranges", "[http]") {
  AddressPolicy policy;
  REQUIRE(policy.Allow("10.1.0.0/16").ok());
  REQUIRE(policy.Allow("127.0.0.1").ok());
  REQUIRE(policy.Allow("::1/128").ok());
  CHECK(Permitted(policy, "10.1.2.3"));
  CHECK_FALSE(Permitted(policy, "10.2.0.1"));
  CHECK(Permitted(policy, "127.0.0.1"));
  CHECK_FALSE(Permitted(policy, "127.0.0.2"));
  CHECK(Permitted(policy, "::1"));
  // Judged by the embedded IPv4 address.
  CHECK(Permitted(policy, "::ffff:10.1.0.9"));
  CHECK_FALSE(Permitted(policy, "::ffff:169.254.169.254"));
  CHECK(Permitted(policy, "8.8.8.8"));
}

TEST_CASE("Permits reads sockaddr_in and sockaddr_in6", "[http]") {
  AddressPolicy policy;
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  REQUIRE(::inet_pton(AF_INET, "127.0.0.1", &v4.sin_addr) == 1);
  CHECK_FALSE(policy.Permits(reinterpret_cast<const sockaddr*>(&v4)));
  REQUIRE(::inet_pton(AF_INET, "8.8.4.4", &v4.sin_addr) == 1);
  CHECK(policy.Permits(reinterpret_cast<const sockaddr*>(&v4)));

  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  REQUIRE(::inet_pton(AF_INET6, "::ffff:127.0.0.1", &v6.sin6_addr) == 1);
  CHECK_FALSE(policy.Permits(reinterpret_cast<const sockaddr*>(&v6)));
  REQUIRE(policy.Allow("127.0.0.0/8").ok());
  CHECK(policy.Permits(reinterpret_cast<const sockaddr*>(&v6)));

  sockaddr unix_family{};
  unix_family.sa_family = AF_UNIX;
  CHECK_FALSE(policy.Permits(&unix_family));
  CHECK_FALSE(policy.Permits(nullptr));
}

TEST_CASE("ParseCidr reads networks and bare addresses", "[http]") {
  absl::StatusOr<Cidr> v4 = ParseCidr("10.0.0.0/8");
  REQUIRE(v4.ok());
  CHECK(v4->family == AF_INET);
  CHECK(v4->prefix_length == 8);
  absl::StatusOr<Cidr> bare = ParseCidr("192.0.2.7");
  REQUIRE(bare.ok());
  CHECK(bare->prefix_length == 32);
  absl::StatusOr<Cidr> v6 = ParseCidr("fd00::/8");
  REQUIRE(v6.ok());
  CHECK(v6->family == AF_INET6);
  CHECK(v6->prefix_length == 8);
  absl::StatusOr<Cidr> bare6 = ParseCidr("::1");
  REQUIRE(bare6.ok());
  CHECK(bare6->prefix_length == 128);
  CHECK(ParseCidr("0.0.0.0/0").ok());
  CHECK(ParseCidr("::/0").ok());

  for (const char* bad :
       {"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0.0/-1",
        "10.0.0.0/+8", "10.0.0.0/ 8", "10.0.0/8", "example.com", "10.0.0.0/8/8",
        "fe80::1%eth0"}) {
    INFO(bad);
    CHECK(ParseCidr(bad).status().code() == absl::StatusCode::kInvalidArgument);
    AddressPolicy policy;
    CHECK(policy.Allow(bad).code() == absl::StatusCode::kInvalidArgument);
  }
  const absl::Status host_bits = ParseCidr("10.0.0.1/8").status();
  CHECK(host_bits.code() == absl::StatusCode::kInvalidArgument);
  CHECK(absl::StrContains(host_bits.message(), "10.0.0.0/8"));
}

TEST_CASE("Cidr::Contains compares the prefix bits only", "[http]") {
  absl::StatusOr<Cidr> network = ParseCidr("172.16.0.0/12");
  REQUIRE(network.ok());
  in_addr inside{};
  REQUIRE(::inet_pton(AF_INET, "172.31.1.1", &inside) == 1);
  in_addr outside{};
  REQUIRE(::inet_pton(AF_INET, "172.32.0.0", &outside) == 1);
  CHECK(network->Contains(AF_INET, reinterpret_cast<uint8_t*>(&inside)));
  CHECK_FALSE(network->Contains(AF_INET, reinterpret_cast<uint8_t*>(&outside)));
  in6_addr v6{};
  CHECK_FALSE(network->Contains(AF_INET6, reinterpret_cast<uint8_t*>(&v6)));
}

absl::Status Check(absl::string_view url) {
  return CheckUrl(url, AddressPolicy());
}

// The message of a refused URL, which must say what is wrong.
std::string RefusalOf(absl::string_view url,
                      const AddressPolicy& policy = AddressPolicy()) {
  const absl::Status status = CheckUrl(url, policy);
  INFO(url << ": " << status.ToString());
  REQUIRE(status.code() == absl::StatusCode::kInvalidArgument);
  return std::string(status.message());
}

TEST_CASE("CheckUrl accepts http and https URLs to permitted addresses",
          "[http]") {
  CHECK(Check("http://8.8.8.8/hook").ok());
  CHECK(Check("https://8.8.8.8:8443/hook?x=1").ok());
  CHECK(Check("HTTPS://[2606:4700:4700::1111]/hook").ok());
  AddressPolicy local;
  REQUIRE(local.Allow("127.0.0.0/8").ok());
  REQUIRE(local.Allow("::1").ok());
  CHECK(CheckUrl("http://localhost:8080/hook", local).ok());
  CHECK(CheckUrl("http://127.0.0.1:8080/hook", local).ok());
}

TEST_CASE("CheckUrl refuses malformed URLs with a clear message", "[http]") {
  CHECK(absl::StrContains(RefusalOf("ftp://8.8.8.8/x"), "http"));
  CHECK(absl::StrContains(RefusalOf("file:///etc/passwd"), "http"));
  CHECK(absl::StrContains(RefusalOf("gopher://8.8.8.8/x"), "http"));
  CHECK(absl::StrContains(RefusalOf("8.8.8.8/x"), "http"));
  CHECK(absl::StrContains(RefusalOf(""), "http"));
  CHECK(absl::StrContains(
      RefusalOf(absl::StrCat("http://8.8.8.8/", std::string(2040, 'a'))),
      "2048"));
  CHECK(absl::StrContains(RefusalOf("http://user:pass@8.8.8.8/x"),
                          "user name or password"));
  CHECK(absl::StrContains(RefusalOf("http://user@8.8.8.8/x"),
                          "user name or password"));
  CHECK(absl::StrContains(RefusalOf("http:///x"), "empty host"));
  CHECK(absl::StrContains(RefusalOf("http://8.8.8.8/x#frag"), "fragment"));
  CHECK(absl::StrContains(RefusalOf("http://8.8.8.8/x#"), "fragment"));
  CHECK(absl::StrContains(RefusalOf("http://8.8.8.8/a b"), "space"));
  CHECK(absl::StrContains(RefusalOf("http://8.8.8.8/a\r\nX: y"), "control"));
  CHECK(absl::StrContains(RefusalOf(std::string("http://8.8.8.8/\0", 16)),
                          "control"));
  CHECK(
      absl::StrContains(RefusalOf("http://8.8.8.8/caf\xc3\xa9"), "non-ASCII"));
}

TEST_CASE("CheckUrl refuses hosts that do not resolve", "[http]") {
  // .invalid never resolves (RFC 6761).
  CHECK(absl::StrContains(RefusalOf("https://nowhere.invalid/hook"),
                          "does not resolve"));
}

TEST_CASE("CheckUrl refuses internal addresses, resolved or literal",
          "[http]") {
  for (const char* url : {
           "http://127.0.0.1/x",
           "http://localhost:8080/x",
           "http://169.254.169.254/latest/meta-data/",
           "http://[::1]/x",
           "http://[::ffff:127.0.0.1]/x",
           "http://10.0.0.1/x",
           "http://0.0.0.0/x",
           "http://2130706433/x",
           "http://0x7f.1/x",
           "http://127.1/x",
           "http://[fd00:ec2::254]/x",
       }) {
    const std::string message = RefusalOf(url);
    CHECK(absl::StrContains(message,
                            "private, loopback, link-local or metadata "
                            "address; allow it with --webhook-allow-network "
                            "CIDR"));
  }
  CHECK(absl::StrContains(RefusalOf("http://169.254.169.254/"),
                          "169.254.169.254"));
  // Only ::1 allowed: localhost's 127.0.0.1, if it has it, is still named.
  AddressPolicy v6_only;
  REQUIRE(v6_only.Allow("::1").ok());
  CHECK(
      absl::StrContains(RefusalOf("http://127.0.0.1/x", v6_only), "127.0.0.1"));
}

}  // namespace
}  // namespace http
}  // namespace cqrs
