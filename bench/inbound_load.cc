// Commands from a RabbitMQ queue (issue 17): publishes deposits to the
// queue the bank consumes (`bank serve --amqp-url`, App::Consume) and
// measures how fast they become commands; scripts/bench-inbound runs it
// next to the same deposits over HTTP (bench/http_load.cc).
//
//   inbound_load --amqp-url URL --database-url URL --schema S
//                [--queue bank.deposits] [--accounts 1000]
//                [--messages 50000]
//
// Publishes --messages messages {"amount":1} to the queue (the default
// exchange, routing key = the queue), each with a unique message id and
// the account bench-<i mod accounts> as its CloudEvent subject, persistent,
// with publisher confirms (up to 4 pages of 1,000 in flight). Counts the
// events in <schema>.events every 20 ms until every message has been
// applied, and prints the publishing rate and the rate at which the
// messages became committed deposits (from the first publish to the last
// commit). The last line is machine-readable: "inbound_load: result
// commands_per_s=... publish_per_s=... seconds=...". A benchmark, not a
// test: exit 1 on a setup failure, 2 for bad flags.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "integration/amqp_client.h"

namespace {

namespace amqp = cqrs::integration::amqp;

constexpr int kPage = 1000;
constexpr int kPagesInFlight = 4;

struct Flags {
  std::string amqp_url;
  std::string database_url;
  std::string schema;
  std::string queue = "bank.deposits";
  int accounts = 1000;
  int messages = 50000;
};

bool ParseFlags(int argc, char** argv, Flags& f) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string name = argv[i];
    const std::string value = argv[i + 1];
    if (name == "--amqp-url") {
      f.amqp_url = value;
    } else if (name == "--database-url") {
      f.database_url = value;
    } else if (name == "--schema") {
      f.schema = value;
    } else if (name == "--queue") {
      f.queue = value;
    } else if (name == "--accounts") {
      if (!absl::SimpleAtoi(value, &f.accounts) || f.accounts < 1) {
        return false;
      }
    } else if (name == "--messages") {
      if (!absl::SimpleAtoi(value, &f.messages) || f.messages < 1) {
        return false;
      }
    } else {
      return false;
    }
  }
  return !f.amqp_url.empty() && !f.database_url.empty() && !f.schema.empty();
}

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "inbound_load: %s\n", what.c_str());
  std::exit(1);
}

int64_t CountEvents(pqxx::connection& conn, const std::string& schema) {
  pqxx::nontransaction tx(conn);
  // The schema name comes from the command line of a benchmark; quoted.
  return tx
      .exec1(absl::StrCat("SELECT count(*) FROM ", tx.quote_name(schema),
                          ".events"))[0]
      .as<int64_t>();
}

int Run(const Flags& flags) {
  pqxx::connection db(flags.database_url);
  const int64_t before = CountEvents(db, flags.schema);
  const int64_t target = before + flags.messages;

  auto conn = amqp::Connection::Open(flags.amqp_url);
  if (!conn.ok()) Die(std::string(conn.status().message()));
  if (!(*conn)->EnableConfirms().ok()) Die("confirm.select failed");

  const std::string run = absl::StrCat(absl::ToUnixMicros(absl::Now()));
  amqp::Message m;
  m.routing_key = flags.queue;  // the default exchange: straight to it
  m.content_type = "application/json";
  m.body = R"({"amount":1})";
  m.headers = {{"cloudEvents:subject", ""}};
  m.mandatory = true;  // no such queue: returned, not silently dropped

  const absl::Time t0 = absl::Now();
  for (int i = 0; i < flags.messages; ++i) {
    m.message_id = absl::StrCat("inbound-", run, "-", i);
    m.headers[0].second = absl::StrCat("bench-", i % flags.accounts);
    if (!(*conn)->Publish(m).ok()) Die("publish failed");
    if ((i + 1) % kPage != 0 && i + 1 != flags.messages) continue;
    // Before the next page: at most kPagesInFlight - 1 unconfirmed.
    const uint64_t last = (*conn)->LastPublished();
    const uint64_t through =
        i + 1 == flags.messages
            ? last
            : last - std::min<uint64_t>(last, (kPagesInFlight - 1) * kPage);
    auto confirmed =
        (*conn)->WaitForConfirmsThrough(through, absl::Seconds(60));
    if (!confirmed.ok()) Die(std::string(confirmed.status().message()));
    if (!confirmed->nacked.empty() || !confirmed->returned.empty()) {
      Die(absl::StrCat("the broker did not take every message: is '",
                       flags.queue, "' declared (run the app once)?"));
    }
  }
  const double published = absl::ToDoubleSeconds(absl::Now() - t0);

  int64_t now = before;
  absl::Time last_change = absl::Now();
  while (now < target) {
    absl::SleepFor(absl::Milliseconds(20));
    const int64_t n = CountEvents(db, flags.schema);
    if (n != now) {
      now = n;
      last_change = absl::Now();
    } else if (absl::Now() - last_change > absl::Seconds(30)) {
      Die(absl::StrCat("stalled at ", now - before, " of ", flags.messages,
                       " messages applied"));
    }
  }
  const double applied = absl::ToDoubleSeconds(absl::Now() - t0);
  std::printf("published %d messages in %.2f s (%.0f/s, confirmed)\n",
              flags.messages, published, flags.messages / published);
  std::printf("applied as deposits in %.2f s from the first publish: %.0f/s\n",
              applied, flags.messages / applied);
  std::printf(
      "inbound_load: result commands_per_s=%.0f publish_per_s=%.0f "
      "seconds=%.2f\n",
      flags.messages / applied, flags.messages / published, applied);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, flags)) {
    std::fprintf(stderr,
                 "usage: inbound_load --amqp-url URL --database-url URL "
                 "--schema S [--queue Q] [--accounts K] [--messages N]\n");
    return 2;
  }
  try {
    return Run(flags);
  } catch (const std::exception& e) {
    Die(e.what());
  }
}
