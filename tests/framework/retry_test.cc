#include "framework/retry.h"

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/time/clock.h"

namespace cqrs {
namespace {

// Short pauses keep the test quick; the pause length is not what is tested.
RetryOptions Quick(absl::Duration retry_for) {
  RetryOptions retry;
  retry.retry_for = retry_for;
  retry.pause = absl::Milliseconds(1);
  return retry;
}

TEST_CASE("RetryTransient: retries transient errors until the step succeeds",
          "[retry]") {
  int attempts = 0;
  std::vector<std::string> logged;
  RetryOptions retry = Quick(absl::Minutes(1));
  retry.before_retry = [&](const absl::Status& s) {
    logged.emplace_back(s.message());
  };
  absl::Status s = RetryTransient(retry, [&] {
    ++attempts;
    if (attempts == 1) return absl::UnavailableError("connection lost");
    if (attempts == 2) return absl::UnknownError("commit outcome unknown");
    return absl::OkStatus();
  });
  CHECK(s.ok());
  CHECK(attempts == 3);
  CHECK(logged ==
        std::vector<std::string>{"connection lost", "commit outcome unknown"});
}

TEST_CASE("RetryTransient: returns a permanent error at once", "[retry]") {
  int attempts = 0;
  absl::Status s = RetryTransient(Quick(absl::Minutes(1)), [&] {
    ++attempts;
    return absl::InvalidArgumentError("no such table");
  });
  CHECK(s.code() == absl::StatusCode::kInvalidArgument);
  CHECK(attempts == 1);
}

TEST_CASE("RetryTransient: the retryable predicate decides", "[retry]") {
  int attempts = 0;
  RetryOptions retry = Quick(absl::Minutes(1));
  retry.retryable = [](const absl::Status& s) {
    return s.code() == absl::StatusCode::kUnavailable;
  };
  absl::Status s = RetryTransient(retry, [&] {
    ++attempts;
    return attempts < 3 ? absl::UnavailableError("down")
                        : absl::AbortedError("another rebuild runs");
  });
  CHECK(s.code() == absl::StatusCode::kAborted);
  CHECK(attempts == 3);
}

TEST_CASE("RetryTransient: gives up after retry_for with the last error",
          "[retry]") {
  int attempts = 0;
  RetryOptions retry = Quick(absl::Milliseconds(30));
  const absl::Time start = absl::Now();
  absl::Status s = RetryTransient(retry, [&] {
    ++attempts;
    return absl::UnavailableError(std::to_string(attempts));
  });
  CHECK(s.code() == absl::StatusCode::kUnavailable);
  CHECK(s.message() == std::to_string(attempts));
  CHECK(attempts > 1);
  CHECK(absl::Now() - start >= absl::Milliseconds(30));
}

TEST_CASE("RetryTransient: retry_for zero tries once", "[retry]") {
  int attempts = 0;
  absl::Status s = RetryTransient(Quick(absl::ZeroDuration()), [&] {
    ++attempts;
    return absl::UnavailableError("down");
  });
  CHECK(s.code() == absl::StatusCode::kUnavailable);
  CHECK(attempts == 1);
}

TEST_CASE("RetryTransient: retry_for counts from since()", "[retry]") {
  // Each attempt makes progress: however long the whole takes, a step that
  // keeps getting further is resumed; once it stops, retry_for ends it.
  int attempts = 0;
  absl::Time last_progress = absl::Now();
  RetryOptions retry = Quick(absl::Milliseconds(200));
  retry.since = [&] { return last_progress; };
  absl::Status s = RetryTransient(retry, [&] {
    ++attempts;
    if (attempts <= 5) {
      // The step's own work, not a wait: time passing is what is tested.
      // Progress, then a fault; five of them take longer than retry_for.
      absl::SleepFor(absl::Milliseconds(100));
      last_progress = absl::Now();
      return absl::UnavailableError("fault after progress");
    }
    return attempts < 8 ? absl::UnavailableError("fault") : absl::OkStatus();
  });
  CHECK(s.ok());
  CHECK(attempts == 8);
}

TEST_CASE("RetryTransient: stop ends the retries", "[retry]") {
  int attempts = 0;
  bool stopping = false;
  RetryOptions retry = Quick(absl::Minutes(1));
  retry.stop = [&] { return stopping; };
  absl::Status s = RetryTransient(retry, [&] {
    if (++attempts == 2) stopping = true;
    return absl::UnavailableError("down");
  });
  CHECK(s.code() == absl::StatusCode::kUnavailable);
  CHECK(attempts == 2);
}

}  // namespace
}  // namespace cqrs
