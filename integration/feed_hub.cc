#include "integration/feed_hub.h"

#include <algorithm>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "eventstore/postgres_event_store.h"
#include "framework/log.h"
#include "framework/worker_pool.h"

namespace cqrs::integration {
namespace {

// Jobs waiting for the pool, catch-up pages and long-polls together.
constexpr size_t kPoolQueue = 1 << 16;
// Long-polls waiting at once; more are answered at once.
constexpr size_t kMaxWaiters = 1 << 15;
// Events the tail reads per query.
constexpr int kTailBatch = 1000;
// The longest the tail blocks in one wait (how soon it sees Stop()).
constexpr absl::Duration kMaxTailWait = absl::Milliseconds(200);

constexpr absl::string_view kHeartbeat = ":\n\n";
constexpr absl::string_view kTooSlow =
    ": closed: this client fell too far behind; reconnect with "
    "Last-Event-ID to resume\n\n";
constexpr absl::string_view kShuttingDown =
    ": closed: the server is shutting down; reconnect with Last-Event-ID to "
    "resume\n\n";
constexpr absl::string_view kReadFailed =
    ": closed: the event log could not be read; reconnect with "
    "Last-Event-ID to resume\n\n";

}  // namespace

std::string SseFrame(const FeedItem& item) {
  return absl::StrCat("id: ", item.position.ToToken(),
                      "\nevent: ", item.type->CloudEventType(),
                      "\ndata: ", item.cloud_event, "\n\n");
}

ChangeWait ChangeWaitOn(std::string conninfo, std::string schema) {
  struct Listening {
    std::unique_ptr<eventstore::ChangeListener> listener;
    absl::Time retry_at = absl::InfinitePast();
  };
  auto state = std::make_shared<Listening>();
  return [state, conninfo = std::move(conninfo),
          schema = std::move(schema)](absl::Duration timeout) {
    if (state->listener == nullptr) {
      if (absl::Now() >= state->retry_at) {
        absl::StatusOr<std::unique_ptr<eventstore::ChangeListener>> created =
            eventstore::ChangeListener::Create(conninfo, schema);
        if (created.ok()) {
          state->listener = *std::move(created);
          return;  // Anything committed meanwhile was not announced: read.
        }
        state->retry_at = absl::Now() + absl::Seconds(1);
      }
      absl::SleepFor(timeout);
      return;
    }
    absl::StatusOr<std::optional<eventstore::Position>> notified =
        state->listener->Wait(timeout);
    if (!notified.ok()) {
      Log(LogLevel::kWarn, "event stream listener lost its connection",
          {{"error", notified.status().ToString()}});
      state->listener.reset();
    }
  };
}

class FeedHub::State : public std::enable_shared_from_this<State> {
 public:
  using WaitEnd = FeedHub::WaitEnd;

  State(eventstore::EventStore* store, const Publication* publication,
        FeedHubOptions options, ChangeWait wait_for_change)
      : store_(store),
        publication_(publication),
        options_(std::move(options)),
        wait_for_change_(std::move(wait_for_change)),
        pool_(options_.catch_up_threads, kPoolQueue) {}

  void Start() {
    absl::MutexLock lock(&mu_);
    if (started_ || stopping_) return;
    started_ = true;
    tail_ = std::thread([self = shared_from_this()] { self->TailLoop(); });
  }

  void Stop() {
    std::vector<std::shared_ptr<Subscriber>> subscribers;
    std::vector<Waiter> waiters;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      stopping_ = true;
      for (auto& [id, sub] : subscribers_) subscribers.push_back(sub);
      subscribers_.clear();
      ReportSubscribers();
      waiters = std::exchange(waiters_, {});
    }
    if (tail_.joinable()) tail_.join();
    for (auto& sub : subscribers) CloseWith(*sub, kShuttingDown);
    for (Waiter& waiter : waiters) waiter.done(WaitEnd::kStopping);
    pool_.Stop();
  }

  void Subscribe(FeedQuery query, std::shared_ptr<http::StreamWriter> writer) {
    auto sub = std::make_shared<Subscriber>();
    sub->filter = std::move(query);
    sub->cursor = sub->filter.after;
    sub->writer = std::move(writer);
    sub->writer->Write(absl::StrCat(
        "retry: ", absl::ToInt64Milliseconds(options_.retry), "\n\n"));
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        sub->writer->Write(std::string(kShuttingDown));
        sub->writer->Close();
        return;
      }
      sub->id = ++last_id_;
      subscribers_.emplace(sub->id, sub);
      ReportSubscribers();
    }
    std::weak_ptr<State> weak = shared_from_this();
    // Outside mu_: runs at once when the client has already gone.
    sub->writer->OnClose([weak, id = sub->id] {
      if (std::shared_ptr<State> self = weak.lock()) self->Remove(id);
    });
    ScheduleCatchUp(sub);
    wake_.Signal();
  }

  bool WaitForEvents(eventstore::Position after, absl::Time deadline,
                     std::function<void(WaitEnd)> done) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || waiters_.size() >= kMaxWaiters) return false;
      if (!head_known_ || head_ <= after) {
        waiters_.push_back(Waiter{after, deadline, std::move(done)});
        wake_.Signal();
        return true;
      }
    }
    RunOnPool([done = std::move(done)] { done(WaitEnd::kPassed); });
    return true;
  }

  size_t subscribers() const {
    absl::MutexLock lock(&mu_);
    return subscribers_.size();
  }

  size_t live_subscribers() const {
    absl::MutexLock lock(&mu_);
    size_t live = 0;
    for (const auto& [id, sub] : subscribers_) live += sub->live ? 1 : 0;
    return live;
  }

 private:
  struct Subscriber {
    uint64_t id = 0;
    FeedQuery filter;
    std::shared_ptr<http::StreamWriter> writer;
    // The last event this subscriber has been given or passed over. Guarded
    // by State::mu_ once live; the catch-up job owns it before.
    eventstore::Position cursor;
    // Guarded by State::mu_.
    bool live = false;
    // Caught up with the store, waiting for the tail to know its head.
    bool waiting_for_head = false;
  };

  struct Waiter {
    eventstore::Position after;
    absl::Time deadline;
    std::function<void(WaitEnd)> done;
  };

  // An event of a tail batch, encoded once for every subscriber.
  struct Published {
    FeedItem item;
    const eventstore::RecordedEvent* event;
    std::string frame;
  };

  void Remove(uint64_t id) {
    absl::MutexLock lock(&mu_);
    subscribers_.erase(id);
    ReportSubscribers();
  }

  void ReportSubscribers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (options_.subscribers_gauge != nullptr) {
      options_.subscribers_gauge->Set(static_cast<double>(subscribers_.size()));
    }
  }

  void CountSent(size_t events) {
    if (options_.events_sent != nullptr && events > 0) {
      options_.events_sent->Increment(static_cast<double>(events));
    }
  }

  static void CloseWith(Subscriber& sub, absl::string_view comment) {
    sub.writer->Write(std::string(comment));
    sub.writer->Close();
  }

  void RunOnPool(std::function<void()> job) {
    auto shared = std::make_shared<std::function<void()>>(std::move(job));
    if (!pool_.TrySubmit([shared] { (*shared)(); })) (*shared)();
  }

  // ---- Catching up ------------------------------------------------------

  void ScheduleCatchUp(std::shared_ptr<Subscriber> sub) {
    std::weak_ptr<State> weak = shared_from_this();
    const bool queued = pool_.TrySubmit([weak, sub] {
      if (std::shared_ptr<State> self = weak.lock()) self->CatchUp(sub);
    });
    if (!queued) CloseWith(*sub, kShuttingDown);
  }

  // One page for `sub`; then live, or another page once its connection has
  // written most of this one.
  void CatchUp(const std::shared_ptr<Subscriber>& sub) {
    if (sub->writer->closed()) return;
    FeedQuery query = sub->filter;
    query.after = sub->cursor;
    query.limit = options_.catch_up_page;
    query.scan_budget = std::max(query.scan_budget, query.limit);
    absl::StatusOr<FeedPage> page = ReadFeed(*store_, *publication_, query);
    if (!page.ok()) {
      Log(LogLevel::kWarn, "event stream could not read the feed",
          {{"error", page.status().ToString()}});
      return CloseWith(*sub, kReadFailed);
    }
    for (const FeedItem& item : page->items) {
      if (!sub->writer->Write(SseFrame(item))) return;
    }
    CountSent(page->items.size());
    {
      absl::MutexLock lock(&mu_);
      sub->cursor = page->next;
      if (subscribers_.count(sub->id) == 0) return;
      if (head_known_ && sub->cursor >= head_) {
        sub->live = true;
        return;
      }
      if (page->at_head && !head_known_) {
        sub->waiting_for_head = true;
        wake_.Signal();
        return;
      }
    }
    std::weak_ptr<State> weak = shared_from_this();
    sub->writer->OnWritable(options_.max_buffered_bytes / 4, [weak, sub] {
      if (std::shared_ptr<State> self = weak.lock()) {
        self->ScheduleCatchUp(sub);
      }
    });
  }

  // ---- The tail ---------------------------------------------------------

  void TailLoop() {
    absl::Time next_heartbeat = absl::Now() + options_.heartbeat;
    while (true) {
      bool active;
      {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
        active = !subscribers_.empty() || !waiters_.empty();
        if (!active) {
          // Idle: nothing to read for; the next reader may start far
          // ahead, so the head is learnt again then.
          head_known_ = false;
          wake_.WaitWithTimeout(&mu_, options_.poll_interval);
          continue;
        }
      }
      if (!HeadKnown()) LearnHead();
      ReadTail();
      ExpireWaiters();
      if (absl::Now() >= next_heartbeat) {
        Heartbeat();
        next_heartbeat = absl::Now() + options_.heartbeat;
      }
      absl::Duration wait = std::min({options_.poll_interval, kMaxTailWait,
                                      NextDeadline() - absl::Now(),
                                      next_heartbeat - absl::Now()});
      wait = std::max(wait, absl::ZeroDuration());
      if (wait_for_change_) {
        wait_for_change_(wait);
      } else {
        absl::MutexLock lock(&mu_);
        wake_.WaitWithTimeout(&mu_, wait);
      }
    }
  }

  bool HeadKnown() {
    absl::MutexLock lock(&mu_);
    return head_known_;
  }

  // Where the tail starts after being idle: what a ReadAll can return now.
  // Live subscribers behind it (none, normally: they were not live while
  // the tail was idle) go back to catching up.
  void LearnHead() {
    absl::StatusOr<eventstore::Position> head = store_->HeadPosition();
    if (!head.ok()) {
      Log(LogLevel::kWarn, "event stream could not read the head",
          {{"error", head.status().ToString()}});
      return;
    }
    std::vector<std::shared_ptr<Subscriber>> resume;
    {
      absl::MutexLock lock(&mu_);
      head_ = *head;
      head_known_ = true;
      for (auto& [id, sub] : subscribers_) {
        if ((sub->live && sub->cursor < head_) || sub->waiting_for_head) {
          sub->live = false;
          sub->waiting_for_head = false;
          resume.push_back(sub);
        }
      }
    }
    for (auto& sub : resume) ScheduleCatchUp(sub);
    WakePassed();
  }

  // Runs the long-polls whose cursor the tail has passed.
  void WakePassed() {
    std::vector<Waiter> woken;
    {
      absl::MutexLock lock(&mu_);
      for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (head_known_ && it->after < head_) {
          woken.push_back(std::move(*it));
          it = waiters_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (Waiter& waiter : woken) {
      RunOnPool([done = std::move(waiter.done)] { done(WaitEnd::kPassed); });
    }
  }

  void ReadTail() {
    while (true) {
      eventstore::Position from;
      bool encode;
      {
        absl::MutexLock lock(&mu_);
        if (!head_known_ || stopping_) return;
        from = head_;
        encode = !subscribers_.empty();
      }
      absl::StatusOr<eventstore::ReadAllResult> batch =
          store_->ReadAll(from, kTailBatch);
      if (!batch.ok()) {
        Log(LogLevel::kWarn, "event stream could not read the tail",
            {{"error", batch.status().ToString()}});
        return;
      }
      if (batch->events.empty()) return;
      std::vector<Published> published;
      if (encode) {
        if (!Encode(*batch, &published)) return;
      }
      Dispatch(*batch, published, encode);
      if (static_cast<int>(batch->events.size()) < kTailBatch) return;
    }
  }

  // The published events of `batch`, each encoded once. False (all
  // subscribers closed) when one cannot be encoded.
  bool Encode(const eventstore::ReadAllResult& batch,
              std::vector<Published>* out) {
    for (const eventstore::RecordedEvent& event : batch.events) {
      const PublishedType* type = publication_->Find(event.event_type);
      if (type == nullptr) continue;
      absl::StatusOr<std::optional<std::string>> json =
          publication_->Encode(event);
      if (!json.ok()) {
        Log(LogLevel::kWarn, "event stream could not encode an event",
            {{"error", json.status().ToString()},
             {"position", event.position.ToToken()}});
        std::vector<std::shared_ptr<Subscriber>> all;
        {
          absl::MutexLock lock(&mu_);
          for (auto& [id, sub] : subscribers_) all.push_back(sub);
          subscribers_.clear();
          ReportSubscribers();
        }
        for (auto& sub : all) CloseWith(*sub, kReadFailed);
        return false;
      }
      Published p{FeedItem{event.position, type, **std::move(json)}, &event,
                  std::string()};
      p.frame = SseFrame(p.item);
      out->push_back(std::move(p));
    }
    return true;
  }

  // Hands the batch to live subscribers, moves the head past it and wakes
  // the long-polls it passed. `encoded`: `published` holds the batch's
  // published events (there was no subscriber to encode them for when the
  // batch was read, otherwise).
  void Dispatch(const eventstore::ReadAllResult& batch,
                const std::vector<Published>& published, bool encoded) {
    const eventstore::Position last = batch.events.back().position;
    std::vector<std::shared_ptr<Subscriber>> too_slow;
    std::vector<std::shared_ptr<Subscriber>> resume;
    size_t sent = 0;
    {
      absl::MutexLock lock(&mu_);
      for (auto it = subscribers_.begin(); it != subscribers_.end();) {
        Subscriber& sub = *it->second;
        bool keep = true;
        if (sub.live && !encoded && sub.cursor < last) {
          // Went live while the batch was read: it reads the batch itself.
          sub.live = false;
          resume.push_back(it->second);
        } else if (sub.live) {
          for (const Published& p : published) {
            if (p.item.position <= sub.cursor ||
                !FeedMatches(sub.filter, *p.event, *p.item.type)) {
              continue;
            }
            if (!sub.writer->Write(p.frame)) {
              keep = false;
              break;
            }
            ++sent;
          }
          if (keep && sub.writer->buffered() > options_.max_buffered_bytes) {
            too_slow.push_back(it->second);
            keep = false;
          }
          if (sub.cursor < last) sub.cursor = last;
        }
        it = keep ? std::next(it) : subscribers_.erase(it);
      }
      head_ = last;
      ReportSubscribers();
    }
    CountSent(sent);
    for (auto& sub : too_slow) {
      Log(LogLevel::kInfo, "event stream closed a client that fell behind",
          {{"buffered_bytes", static_cast<int64_t>(sub->writer->buffered())}});
      CloseWith(*sub, kTooSlow);
      if (options_.closed_too_slow != nullptr) {
        options_.closed_too_slow->Increment();
      }
    }
    for (auto& sub : resume) ScheduleCatchUp(sub);
    WakePassed();
  }

  void ExpireWaiters() {
    std::vector<Waiter> expired;
    const absl::Time now = absl::Now();
    {
      absl::MutexLock lock(&mu_);
      for (auto it = waiters_.begin(); it != waiters_.end();) {
        if (it->deadline <= now) {
          expired.push_back(std::move(*it));
          it = waiters_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (Waiter& waiter : expired) {
      RunOnPool([done = std::move(waiter.done)] { done(WaitEnd::kDeadline); });
    }
  }

  absl::Time NextDeadline() {
    absl::MutexLock lock(&mu_);
    absl::Time next = absl::InfiniteFuture();
    for (const Waiter& waiter : waiters_)
      next = std::min(next, waiter.deadline);
    return next;
  }

  void Heartbeat() {
    absl::MutexLock lock(&mu_);
    for (auto& [id, sub] : subscribers_) {
      sub->writer->Write(std::string(kHeartbeat));
    }
  }

  eventstore::EventStore* const store_;
  const Publication* const publication_;
  const FeedHubOptions options_;
  const ChangeWait wait_for_change_;
  WorkerPool pool_;
  std::thread tail_;

  mutable absl::Mutex mu_;
  absl::CondVar wake_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t last_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, std::shared_ptr<Subscriber>> subscribers_
      ABSL_GUARDED_BY(mu_);
  std::vector<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  // The tail has read every event up to head_ (when head_known_).
  eventstore::Position head_ ABSL_GUARDED_BY(mu_);
  bool head_known_ ABSL_GUARDED_BY(mu_) = false;
};

FeedHub::FeedHub(eventstore::EventStore* store, const Publication* publication,
                 FeedHubOptions options, ChangeWait wait_for_change)
    : state_(std::make_shared<State>(store, publication, std::move(options),
                                     std::move(wait_for_change))) {}

FeedHub::~FeedHub() { Stop(); }

void FeedHub::Start() { state_->Start(); }
void FeedHub::Stop() { state_->Stop(); }

void FeedHub::Subscribe(FeedQuery query,
                        std::shared_ptr<http::StreamWriter> writer) {
  state_->Subscribe(std::move(query), std::move(writer));
}

bool FeedHub::WaitForEvents(eventstore::Position after, absl::Time deadline,
                            std::function<void(WaitEnd)> done) {
  return state_->WaitForEvents(after, deadline, std::move(done));
}

size_t FeedHub::subscribers() const { return state_->subscribers(); }
size_t FeedHub::live_subscribers() const { return state_->live_subscribers(); }

}  // namespace cqrs::integration
