#include "framework/heap_trimmer.h"

#include <memory>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/time/clock.h"

namespace cqrs {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitizerMalloc = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitizerMalloc = true;
#else
constexpr bool kSanitizerMalloc = false;
#endif
#else
constexpr bool kSanitizerMalloc = false;
#endif

TEST_CASE("HeapTrimmer: a thread's freed arena pages go back to the system",
          "[framework]") {
  // 64 MB in small blocks on a thread of its own (its own arena), all but
  // the last freed: the arena keeps them until trimmed (the last block
  // keeps the arena's top from shrinking by itself).
  std::vector<std::unique_ptr<char[]>> blocks;
  std::thread allocator([&] {
    for (int i = 0; i < 64 * 1024; ++i) {
      blocks.push_back(std::make_unique<char[]>(1000));
      blocks.back()[0] = 1;  // touched: resident
    }
    for (size_t i = 0; i + 1 < blocks.size(); ++i) blocks[i].reset();
  });
  allocator.join();
  const bool released = HeapTrimmer::TrimNow();
  // Under a sanitizer, malloc is the sanitizer's and glibc's arenas hold
  // next to nothing: only that the call is harmless is checked there.
  if (!kSanitizerMalloc) CHECK(released);
}

TEST_CASE("HeapTrimmer: destroying it stops its thread without waiting",
          "[framework]") {
  const absl::Time start = absl::Now();
  { HeapTrimmer trimmer(absl::Hours(1)); }
  // Not a timing bound on the machine: an hour would mean it waited for
  // its next trim instead of stopping.
  CHECK(absl::Now() - start < absl::Minutes(10));
}

}  // namespace
}  // namespace cqrs
