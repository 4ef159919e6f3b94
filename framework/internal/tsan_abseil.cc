// ThreadSanitizer support for Debian's Abseil, linked into every executable
// of a -DCQRS_SANITIZE=thread build (cmake/CqrsTargets.cmake) and into no
// other build.
//
// absl::Mutex, absl::CondVar and absl::Notification do their synchronizing
// inside libabsl_synchronization.so, which Debian builds without TSan: TSan
// would see none of the happens-before edges they create and report every
// access they protect as a race. The definitions below take precedence over
// the shared library's (the executable's symbols interpose), tell TSan what
// each call does the way Abseil's own TSan build does
// (__tsan_mutex_pre_lock ... post_unlock, which also hides the library's
// internal work, such as evaluating a waiter's Condition, from the race
// detector), and call the library's original, found with dlsym(RTLD_NEXT).
// Only the members this project calls are covered.
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

static_assert(ABSL_OPTION_USE_INLINE_NAMESPACE == 1,
              "the mangled names below assume Abseil's inline namespace");

namespace {

#define CQRS_TSAN_STRINGIFY2(x) #x
#define CQRS_TSAN_STRINGIFY(x) CQRS_TSAN_STRINGIFY2(x)

// The library's definition of absl::<inline namespace>::<member>: `nested`
// is "N" for a member, "NK" for a const member; `member` the rest of the
// Itanium mangling after the namespace (S0_ is absl::<inline namespace>).
template <typename Function>
Function Original(const char* nested, const char* member) {
  const char* ns = CQRS_TSAN_STRINGIFY(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  const std::string name = std::string("_Z") + nested + "4absl" +
                           std::to_string(std::strlen(ns)) + ns + member;
  void* original = dlsym(RTLD_NEXT, name.c_str());
  if (original == nullptr) {
    std::fprintf(stderr, "tsan_abseil: %s is not in any loaded library\n",
                 name.c_str());
    std::abort();
  }
  return reinterpret_cast<Function>(original);
}

using MutexCall = void (*)(absl::Mutex*);
using MutexTry = bool (*)(absl::Mutex*);
using Await = void (*)(absl::Mutex*, const absl::Condition&);
using AwaitTimeout = bool (*)(absl::Mutex*, const absl::Condition&,
                              absl::Duration);
using AwaitDeadline = bool (*)(absl::Mutex*, const absl::Condition&,
                               absl::Time);
using Wait = void (*)(absl::CondVar*, absl::Mutex*);
using WaitTimeout = bool (*)(absl::CondVar*, absl::Mutex*, absl::Duration);
using WaitDeadline = bool (*)(absl::CondVar*, absl::Mutex*, absl::Time);
using Notify = void (*)(absl::Notification*);
using WaitNotified = void (*)(const absl::Notification*);
using WaitNotifiedTimeout = bool (*)(const absl::Notification*, absl::Duration);
using WaitNotifiedDeadline = bool (*)(const absl::Notification*, absl::Time);

// The library calls its own members too (AwaitWithTimeout calls
// AwaitWithDeadline, Notify locks a Mutex), and those calls also land here.
// Only the outermost call on a thread is annotated: the inner ones are the
// library's implementation of it.
thread_local int depth = 0;

class Outermost {
 public:
  Outermost() : outermost_(depth++ == 0) {}
  ~Outermost() { --depth; }
  explicit operator bool() const { return outermost_; }

 private:
  const bool outermost_;
};

// Around a call that releases `mu` and holds it again when it returns
// (Await, CondVar::Wait): an unlock, then a lock, as TSan sees it.
template <typename Call>
auto Reacquiring(absl::Mutex* mu, Call call) {
  Outermost outermost;
  if (!outermost) return call();
  __tsan_mutex_pre_unlock(mu, 0);
  auto result = call();
  __tsan_mutex_post_unlock(mu, 0);
  __tsan_mutex_pre_lock(mu, 0);
  __tsan_mutex_post_lock(mu, 0, 0);
  return result;
}

// Notification keeps its flag in an atomic after its mutex; HasBeenNotified()
// reads it inline (instrumented, with acquire), so Notify() releases on the
// flag's address and every wait acquires on it.
void* FlagOf(const absl::Notification* n) {
  struct Layout {
    absl::Mutex mutex;
    std::atomic<bool> notified;
  };
  return const_cast<char*>(reinterpret_cast<const char*>(n)) +
         offsetof(Layout, notified);
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static const MutexCall original = Original<MutexCall>("N", "5Mutex4LockEv");
  Outermost outermost;
  if (!outermost) return original(this);
  __tsan_mutex_pre_lock(this, 0);
  original(this);
  __tsan_mutex_post_lock(this, 0, 0);
}

void Mutex::Unlock() {
  static const MutexCall original = Original<MutexCall>("N", "5Mutex6UnlockEv");
  Outermost outermost;
  if (!outermost) return original(this);
  __tsan_mutex_pre_unlock(this, 0);
  original(this);
  __tsan_mutex_post_unlock(this, 0);
}

void Mutex::ReaderLock() {
  static const MutexCall original =
      Original<MutexCall>("N", "5Mutex10ReaderLockEv");
  Outermost outermost;
  if (!outermost) return original(this);
  __tsan_mutex_pre_lock(this, __tsan_mutex_read_lock);
  original(this);
  __tsan_mutex_post_lock(this, __tsan_mutex_read_lock, 0);
}

void Mutex::ReaderUnlock() {
  static const MutexCall original =
      Original<MutexCall>("N", "5Mutex12ReaderUnlockEv");
  Outermost outermost;
  if (!outermost) return original(this);
  __tsan_mutex_pre_unlock(this, __tsan_mutex_read_lock);
  original(this);
  __tsan_mutex_post_unlock(this, __tsan_mutex_read_lock);
}

bool Mutex::TryLock() {
  static const MutexTry original = Original<MutexTry>("N", "5Mutex7TryLockEv");
  Outermost outermost;
  if (!outermost) return original(this);
  __tsan_mutex_pre_lock(this, __tsan_mutex_try_lock);
  const bool locked = original(this);
  __tsan_mutex_post_lock(
      this,
      locked ? __tsan_mutex_try_lock
             : __tsan_mutex_try_lock | __tsan_mutex_try_lock_failed,
      0);
  return locked;
}

void Mutex::Await(const Condition& cond) {
  static const ::Await original =
      Original<::Await>("N", "5Mutex5AwaitERKNS0_9ConditionE");
  Reacquiring(this, [&] {
    original(this, cond);
    return true;
  });
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static const AwaitTimeout original = Original<AwaitTimeout>(
      "N", "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  return Reacquiring(this, [&] { return original(this, cond, timeout); });
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  static const AwaitDeadline original = Original<AwaitDeadline>(
      "N", "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  return Reacquiring(this, [&] { return original(this, cond, deadline); });
}

void CondVar::Wait(Mutex* mu) {
  static const ::Wait original =
      Original<::Wait>("N", "7CondVar4WaitEPNS0_5MutexE");
  Reacquiring(mu, [&] {
    original(this, mu);
    return true;
  });
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static const WaitTimeout original = Original<WaitTimeout>(
      "N", "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  return Reacquiring(mu, [&] { return original(this, mu, timeout); });
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static const WaitDeadline original = Original<WaitDeadline>(
      "N", "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  return Reacquiring(mu, [&] { return original(this, mu, deadline); });
}

void Notification::Notify() {
  static const ::Notify original =
      Original<::Notify>("N", "12Notification6NotifyEv");
  Outermost outermost;
  if (outermost) __tsan_release(FlagOf(this));
  original(this);
}

void Notification::WaitForNotification() const {
  static const WaitNotified original =
      Original<WaitNotified>("NK", "12Notification19WaitForNotificationEv");
  Outermost outermost;
  original(this);
  if (outermost) __tsan_acquire(FlagOf(this));
}

bool Notification::WaitForNotificationWithTimeout(
    absl::Duration timeout) const {
  static const WaitNotifiedTimeout original = Original<WaitNotifiedTimeout>(
      "NK", "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  Outermost outermost;
  const bool notified = original(this, timeout);
  if (notified && outermost) __tsan_acquire(FlagOf(this));
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  static const WaitNotifiedDeadline original = Original<WaitNotifiedDeadline>(
      "NK", "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  Outermost outermost;
  const bool notified = original(this, deadline);
  if (notified && outermost) __tsan_acquire(FlagOf(this));
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
