// One reader of the event store's tail per process, shared by everyone who
// waits for published events: Server-Sent Events subscribers (GET
// /events/stream) and long-poll requests (GET /events?wait=).
//
//   FeedHub hub(&store, &publication, {}, WaitOnChangeListener(...));
//   hub.Start();
//   hub.Subscribe(query, writer);                      // an SSE client
//   hub.WaitForEvents(next, deadline, [&] { ... });    // a long-poll
//   hub.Stop();                                        // before the store
//
// Waiting holds no database connection. A tail thread reads each new batch
// of events once (on a change notification, or every poll_interval) and
// hands it to every live subscriber whose filters it passes; it wakes the
// long-polls whose cursor it has passed. A subscriber that starts behind
// the tail (resuming from Last-Event-ID, or from the start) first catches
// up with feed pages read on a small bounded pool, paced by what its
// connection has written, and joins the live fan-out when it reaches the
// tail; nothing is sent twice or skipped at the switch, since both follow
// the store's commit order (ReadAll) and a live subscriber gets only events
// after its cursor.
//
// Bounds: a live subscriber whose connection has more than
// max_buffered_bytes waiting is closed with a final comment that says why
// (it resumes with Last-Event-ID); it never slows the tail, the other
// subscribers or the writers. Every subscriber gets a heartbeat comment
// every `heartbeat`. With no subscriber and no long-poll the tail reads
// nothing.
//
// The SSE form of an event: "id: <position token>\nevent: <CloudEvents
// type>\ndata: <CloudEvent JSON>\n\n" (the JSON has no line breaks); a new
// subscriber first gets "retry: <ms>\n\n".
//
// Thread-safety: all methods are thread-safe. `store` and `publication`
// must outlive the hub.
#ifndef INTEGRATION_FEED_HUB_H_
#define INTEGRATION_FEED_HUB_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "eventstore/event_store.h"
#include "eventstore/position.h"
#include "framework/http/message.h"
#include "framework/metrics.h"
#include "integration/cloud_events.h"
#include "integration/feed.h"

namespace cqrs::integration {

struct FeedHubOptions {
  // Threads reading catch-up pages and re-reading long-polled pages.
  int catch_up_threads = 2;
  // Events per catch-up page.
  int catch_up_page = 500;
  // A live subscriber with more than this waiting to be written is closed.
  size_t max_buffered_bytes = 1 << 20;
  // A comment line to every subscriber this often (keeps proxies from
  // closing an idle stream, and finds dead connections).
  absl::Duration heartbeat = absl::Seconds(15);
  // The reconnection delay the SSE client is told to use.
  absl::Duration retry = absl::Seconds(2);
  // How often the tail reads without a change notification.
  absl::Duration poll_interval = absl::Seconds(1);
  // Where the hub reports (each may be null; all must outlive the hub):
  // the open streams, the events written to them, and the streams it
  // closed because their client fell too far behind.
  Gauge* subscribers_gauge = nullptr;
  Counter* events_sent = nullptr;
  Counter* closed_too_slow = nullptr;
};

// Blocks until a change may have been committed (a notification) or
// `timeout` passed. The hub calls it from its tail thread only.
using ChangeWait = std::function<void(absl::Duration timeout)>;

// A ChangeWait on the change notifications of the PostgreSQL event store
// in `schema` (eventstore::ChangeListener): a connection of its own, opened
// on first use and reopened after a loss (at most once a second; the waits
// meanwhile sleep, and the first wait after a reconnection returns at once,
// since what committed in between was not announced).
ChangeWait ChangeWaitOn(std::string conninfo, std::string schema);

// The SSE frame of one feed item (see above).
std::string SseFrame(const FeedItem& item);

class FeedHub {
 public:
  // Without `wait_for_change`, the tail reads every poll_interval.
  FeedHub(eventstore::EventStore* store, const Publication* publication,
          FeedHubOptions options, ChangeWait wait_for_change = nullptr);
  FeedHub(const FeedHub&) = delete;
  FeedHub& operator=(const FeedHub&) = delete;
  // Stops.
  ~FeedHub();

  // Starts the tail thread and the pool.
  void Start();

  // Closes every subscriber with a final comment, runs every pending
  // long-poll's callback, and joins the threads. Idempotent.
  void Stop();

  // Streams the published events after `query.after` that pass its filters
  // to `writer` until the writer closes (the client left) or the hub closes
  // it (too far behind, a read error, Stop()). `query.types` must name
  // published types (the caller checked them); limit and scan_budget are
  // ignored.
  void Subscribe(FeedQuery query, std::shared_ptr<http::StreamWriter> writer);

  // Why a WaitForEvents() callback runs.
  enum class WaitEnd {
    kPassed,    // the tail read past `after`: read the feed again
    kDeadline,  // `deadline` passed
    kStopping,  // Stop(): answer without reading (the store may go soon)
  };

  // Runs `done` once when the tail has read past `after` (new events,
  // published or not, may be readable; at once when it already has), when
  // `deadline` passes, or at Stop(). On the hub's pool (on the tail thread
  // when the pool's queue is full), where it may block; on the thread that
  // calls Stop() for kStopping, where it must not. Returns false, without
  // running `done`, when too many long-polls wait or the hub is stopped:
  // answer at once.
  bool WaitForEvents(eventstore::Position after, absl::Time deadline,
                     std::function<void(WaitEnd)> done);

  // For tests and metrics.
  size_t subscribers() const;
  size_t live_subscribers() const;

 private:
  class State;
  std::shared_ptr<State> state_;
};

}  // namespace cqrs::integration

#endif  // INTEGRATION_FEED_HUB_H_
