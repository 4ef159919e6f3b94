#include "framework/heap_trimmer.h"

#include <cstddef>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "absl/time/clock.h"

// glibc's own allocator, also under a sanitizer (whose malloc keeps its
// blocks away from glibc's arenas, which malloc_trim trims).
extern "C" void* __libc_malloc(size_t size);
extern "C" void __libc_free(void* block);

namespace cqrs {
namespace {

TEST_CASE("HeapTrimmer: a thread's freed arena pages go back to the system",
          "[framework]") {
  // 64 MB in small blocks on a thread of its own (its own arena), all but
  // the last freed: the arena keeps them until trimmed (the last block
  // keeps the arena's top from shrinking by itself).
  std::vector<char*> blocks;
  std::thread allocator([&] {
    for (int i = 0; i < 64 * 1024; ++i) {
      char* block = static_cast<char*>(__libc_malloc(1000));
      if (block == nullptr) return;
      block[0] = 1;  // touched: resident
      blocks.push_back(block);
    }
    for (size_t i = 0; i + 1 < blocks.size(); ++i) __libc_free(blocks[i]);
  });
  allocator.join();
  REQUIRE(blocks.size() == 64 * 1024);
  CHECK(HeapTrimmer::TrimNow());
  __libc_free(blocks.back());
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
