// A bounded in-memory map from stream id to the latest known aggregate state.
//
//   StateCache<std::pair<Account, int64_t>> cache(100000);
//   cache.Put("account-1", {account, 7});
//   std::optional<std::pair<Account, int64_t>> hit = cache.Get("account-1");
//
// Entries may be stale (another process appended): users must treat a hit as
// a guess that an append's version check confirms. When full, the cache
// drops an arbitrary eighth of its entries, which is cheap and good enough
// for a cache whose misses cost one query.
//
// Thread-safety: thread-safe. Striped locks keep contention low.
#ifndef COMMANDS_STATE_CACHE_H_
#define COMMANDS_STATE_CACHE_H_

#include <array>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace cqrs::commands {

template <typename Value>
class StateCache {
 public:
  // `capacity` 0 disables the cache.
  explicit StateCache(size_t capacity)
      : per_stripe_capacity_(
            capacity == 0 ? 0 : (capacity + kStripes - 1) / kStripes) {}

  std::optional<Value> Get(absl::string_view key) const {
    if (per_stripe_capacity_ == 0) return std::nullopt;
    const Stripe& s = StripeFor(key);
    absl::MutexLock lock(&s.mu);
    auto it = s.map.find(key);
    if (it == s.map.end()) return std::nullopt;
    return it->second;
  }

  void Put(absl::string_view key, Value value) {
    if (per_stripe_capacity_ == 0) return;
    Stripe& s = StripeFor(key);
    absl::MutexLock lock(&s.mu);
    if (s.map.size() >= per_stripe_capacity_ && !s.map.contains(key)) {
      size_t drop = std::max<size_t>(1, s.map.size() / 8);
      for (auto it = s.map.begin(); it != s.map.end() && drop > 0; --drop) {
        s.map.erase(it++);
      }
    }
    s.map.insert_or_assign(std::string(key), std::move(value));
  }

  void Erase(absl::string_view key) {
    Stripe& s = StripeFor(key);
    absl::MutexLock lock(&s.mu);
    s.map.erase(key);
  }

  void Clear() {
    for (Stripe& s : stripes_) {
      absl::MutexLock lock(&s.mu);
      s.map.clear();
    }
  }

 private:
  static constexpr size_t kStripes = 16;
  struct Stripe {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, Value> map ABSL_GUARDED_BY(mu);
  };

  Stripe& StripeFor(absl::string_view key) const {
    return stripes_[absl::Hash<absl::string_view>{}(key) % kStripes];
  }

  const size_t per_stripe_capacity_;
  mutable std::array<Stripe, kStripes> stripes_;
};

}  // namespace cqrs::commands

#endif  // COMMANDS_STATE_CACHE_H_
