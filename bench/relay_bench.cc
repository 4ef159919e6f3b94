// AMQP relay throughput (issue 17), in one process on the PostgreSQL
// cluster and RabbitMQ node of scripts/bench-relay:
//
//   relay_bench --database-url URL --amqp-url URL [--events 200000]
//               [--rounds 3] [--mode binary|structured]
//
// 1. Baselines: the same messages (routing key, message id, headers, body
//    of every published event, encoded beforehand) published by a bare
//    librabbitmq loop on one channel with publisher confirms, (a) waiting
//    for all confirms after every 1,000, and (b) like the relay does,
//    keeping up to 4 pages of 1,000 in flight (before publishing a page,
//    waiting until at most 3 are unconfirmed).
// 2. The relay (integration/amqp_relay.h) from an empty checkpoint over
//    the same events: from Start() until its checkpoint reaches the head.
// All publish to a topic exchange bound to one durable classic queue of
// version 2 (amqp::Connection::QueueOptions), purged between the runs.
// Prints events/s of each (the median of interleaved rounds) and the ratio.
//
// A benchmark tool, not a test.
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "eventstore/postgres_event_store.h"
#include "framework/pg_pool.h"
#include "integration/amqp_client.h"
#include "integration/amqp_relay.h"

namespace {

using cqrs::eventstore::ExpectedVersion;
using cqrs::eventstore::NewEvent;
using cqrs::integration::AmqpMessageParts;

constexpr int kConfirmEvery = 1000;
constexpr int kPagesInFlight = 4;

struct Flags {
  std::string database_url;
  std::string amqp_url;
  std::string schema = "bench_relay";
  int events = 200000;
  int rounds = 3;
  cqrs::integration::CloudEventsAmqpMode mode =
      cqrs::integration::CloudEventsAmqpMode::kBinary;
};

bool ParseFlags(int argc, char** argv, Flags& f) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string name = argv[i];
    const std::string value = argv[i + 1];
    if (name == "--database-url") {
      f.database_url = value;
    } else if (name == "--amqp-url") {
      f.amqp_url = value;
    } else if (name == "--mode" && value == "binary") {
      f.mode = cqrs::integration::CloudEventsAmqpMode::kBinary;
    } else if (name == "--mode" && value == "structured") {
      f.mode = cqrs::integration::CloudEventsAmqpMode::kStructured;
    } else if (name == "--rounds") {
      if (!absl::SimpleAtoi(value, &f.rounds) || f.rounds < 1) return false;
    } else if (name == "--events") {
      if (!absl::SimpleAtoi(value, &f.events) || f.events < 1000) return false;
    } else {
      return false;
    }
  }
  return !f.database_url.empty() && !f.amqp_url.empty();
}

double ProcessCpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void Die(const char* what) {
  std::fprintf(stderr, "relay_bench: %s\n", what);
  std::exit(1);
}

// Publishes `messages` with confirms in pages of kConfirmEvery, with at
// most `pages_in_flight` pages unconfirmed; the bare librabbitmq API only.
void BarePublish(const std::string& url, const std::string& exchange,
                 const std::vector<AmqpMessageParts>& messages,
                 int pages_in_flight) {
  amqp_connection_info info;
  std::string parsed = url;
  if (amqp_parse_url(parsed.data(), &info) != AMQP_STATUS_OK) Die("bad URL");
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (amqp_socket_open(socket, info.host, info.port) != AMQP_STATUS_OK) {
    Die("cannot connect");
  }
  // amqp_parse_url leaves an empty vhost for "amqp://host:port/": "/".
  const char* vhost = info.vhost[0] == '\0' ? "/" : info.vhost;
  if (amqp_login(conn, vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, info.user,
                 info.password)
          .reply_type != AMQP_RESPONSE_NORMAL) {
    Die("login refused");
  }
  amqp_channel_open(conn, 1);
  amqp_confirm_select(conn, 1);
  if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
    Die("confirm.select failed");
  }
  uint64_t published = 0;
  uint64_t acked = 0;
  std::vector<amqp_table_entry_t> entries;
  for (size_t i = 0; i < messages.size(); ++i) {
    const AmqpMessageParts& m = messages[i];
    entries.resize(m.headers.size());
    for (size_t h = 0; h < m.headers.size(); ++h) {
      entries[h].key = amqp_cstring_bytes(m.headers[h].first.c_str());
      entries[h].value.kind = AMQP_FIELD_KIND_UTF8;
      entries[h].value.value.bytes =
          amqp_cstring_bytes(m.headers[h].second.c_str());
    }
    amqp_basic_properties_t props;
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG |
                   AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                   AMQP_BASIC_HEADERS_FLAG;
    props.content_type = amqp_cstring_bytes(m.content_type.c_str());
    props.delivery_mode = 2;
    props.message_id = amqp_cstring_bytes(m.message_id.c_str());
    props.headers.num_entries = static_cast<int>(entries.size());
    props.headers.entries = entries.data();
    amqp_bytes_t body;
    body.len = m.body.size();
    body.bytes = const_cast<char*>(m.body.data());
    if (amqp_basic_publish(conn, 1, amqp_cstring_bytes(exchange.c_str()),
                           amqp_cstring_bytes(m.routing_key.c_str()), 1, 0,
                           &props, body) != AMQP_STATUS_OK) {
      Die("publish failed");
    }
    ++published;
    if (published % kConfirmEvery != 0 && i + 1 != messages.size()) continue;
    // The last page waits for everything.
    const uint64_t allowed =
        i + 1 == messages.size()
            ? 0
            : static_cast<uint64_t>(pages_in_flight - 1) * kConfirmEvery;
    while (published - acked > allowed) {
      amqp_frame_t frame;
      if (amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK) {
        Die("lost the connection");
      }
      if (frame.frame_type == AMQP_FRAME_METHOD &&
          frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
        auto* ack =
            static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
        acked = ack->multiple ? ack->delivery_tag : acked + 1;
      } else if (frame.frame_type == AMQP_FRAME_METHOD &&
                 frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
        Die("nacked");
      }
      amqp_maybe_release_buffers(conn);
    }
  }
  amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
}

int Run(const Flags& flags) {
  cqrs::PgPoolOptions pool_options;
  pool_options.conninfo = flags.database_url;
  pool_options.max_connections = 8;
  auto pool = cqrs::PgPool::Create(pool_options);
  if (!pool.ok()) Die("no database");
  {
    pqxx::connection conn(flags.database_url);
    pqxx::work tx(conn);
    tx.exec(absl::StrCat("DROP SCHEMA IF EXISTS ", flags.schema, " CASCADE"));
    tx.commit();
  }
  if (!cqrs::eventstore::PostgresEventStore::Migrate(**pool, flags.schema)
           .ok() ||
      !cqrs::integration::AmqpRelay::Migrate(**pool, flags.schema).ok()) {
    Die("migration failed");
  }
  cqrs::eventstore::PostgresEventStoreOptions store_options;
  store_options.schema = flags.schema;
  auto store =
      cqrs::eventstore::PostgresEventStore::Create(pool->get(), store_options);
  if (!store.ok()) Die("no store");
  cqrs::integration::Publication publication("/bench");
  if (!publication.Add({"Ticked", "bench.ticked", 1, nullptr, ""}).ok()) {
    Die("publication");
  }
  for (int i = 0; i < flags.events; i += 100) {
    std::vector<NewEvent> batch(100);
    for (NewEvent& e : batch) {
      e.event_type = "Ticked";
      e.data = R"({"amount":12345,"note":"a benchmark event"})";
      e.metadata = "{}";
    }
    if (!(*store)
             ->Append(absl::StrCat("tick-", i / 100), ExpectedVersion::Any(),
                      std::move(batch))
             .ok()) {
      Die("append failed");
    }
  }
  auto head = (*store)->HeadPosition();
  if (!head.ok()) Die("head");

  const std::string exchange = "bench.relay";
  const std::string queue = "bench.relay.q";
  auto admin = cqrs::integration::amqp::Connection::Open(flags.amqp_url);
  if (!admin.ok()) Die("cannot reach the broker");
  if (!(*admin)->DeclareExchange(exchange, "topic").ok() ||
      !(*admin)->DeclareQueue(queue, {}).ok() ||
      !(*admin)->BindQueue(queue, exchange, "#").ok() ||
      !(*admin)->PurgeQueue(queue).ok()) {
    Die("topology");
  }

  // The messages, encoded beforehand for the baseline.
  std::vector<AmqpMessageParts> messages;
  messages.reserve(flags.events);
  cqrs::eventstore::Position after;
  while (after < *head) {
    auto page = (*store)->ReadAll(after, 10000);
    if (!page.ok() || page->events.empty()) break;
    for (const auto& ev : page->events) {
      auto ce = publication.Encode(ev);
      if (!ce.ok() || !ce->has_value()) Die("encode");
      auto parts = cqrs::integration::CloudEventToAmqp(**ce, flags.mode);
      if (!parts.ok()) Die("binding");
      messages.push_back(*std::move(parts));
    }
    after = page->next;
  }

  // Rounds interleave the three runs, so that a noisy neighbour on this
  // shared machine weighs on all of them; each figure is the median.
  std::vector<double> bare_sync, bare, relayed, relay_cpu;
  for (int round = 0; round < flags.rounds; ++round) {
    if (!(*admin)->PurgeQueue(queue).ok()) Die("purge");
    absl::Time t0 = absl::Now();
    BarePublish(flags.amqp_url, exchange, messages, 1);
    bare_sync.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
    if (!(*admin)->PurgeQueue(queue).ok()) Die("purge");
    t0 = absl::Now();
    BarePublish(flags.amqp_url, exchange, messages, kPagesInFlight);
    bare.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
    if (!(*admin)->PurgeQueue(queue).ok()) Die("purge");

    cqrs::integration::AmqpRelayOptions options;
    options.schema = flags.schema;
    options.name = absl::StrCat("round-", round);  // from the start again
    options.url = flags.amqp_url;
    options.exchange = exchange;
    options.mode = flags.mode;
    auto relay = cqrs::integration::AmqpRelay::Create(pool->get(), store->get(),
                                                      &publication, options);
    if (!relay.ok()) Die("relay");
    const double cpu0 = ProcessCpuSeconds();
    t0 = absl::Now();
    (*relay)->Start();
    pqxx::connection conn(flags.database_url);
    while (true) {
      pqxx::nontransaction tx(conn);
      const pqxx::result r =
          tx.exec_params(absl::StrCat("SELECT published FROM ", flags.schema,
                                      ".amqp_relays WHERE name = $1"),
                         options.name);
      if (!r.empty() && r[0][0].as<int64_t>() >= flags.events) break;
      absl::SleepFor(absl::Milliseconds(5));
    }
    relayed.push_back(absl::ToDoubleSeconds(absl::Now() - t0));
    relay_cpu.push_back(ProcessCpuSeconds() - cpu0);
    (*relay)->Stop();
  }
  const double n = flags.events;
  std::printf("%d events, %s mode, median of %d interleaved rounds:\n",
              flags.events,
              flags.mode == cqrs::integration::CloudEventsAmqpMode::kBinary
                  ? "binary"
                  : "structured",
              flags.rounds);
  std::printf(
      "  bare librabbitmq loop, waiting for confirms every %d: %.0f/s\n",
      kConfirmEvery, n / Median(bare_sync));
  std::printf("  bare librabbitmq loop, %d pages of %d in flight: %.0f/s\n",
              kPagesInFlight, kConfirmEvery, n / Median(bare));
  std::printf(
      "  relay (read, encode, publish, confirm, checkpoint): %.0f/s; ratio "
      "%.2fx of the bare loop in flight\n",
      n / Median(relayed), Median(bare) / Median(relayed));
  std::printf("  relay process CPU (user + system): %.1f us per event\n",
              Median(relay_cpu) * 1e6 / n);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, flags)) {
    std::fprintf(stderr,
                 "usage: relay_bench --database-url URL --amqp-url URL "
                 "[--events N] [--rounds N] [--mode binary|structured]\n");
    return 2;
  }
  return Run(flags);
}
