// Fuzzes the command line every app gets (app/cli.cc): the bytes, split at
// newlines and NUL bytes, are the arguments after the program's name, parsed
// and checked by App::CheckCommandLine(), which is App::Main() without
// running the command (no database, no server). CLI11 turns them into
// options with their range checks, the app's own checks follow (webhook
// filters, --allow-network CIDRs, --max-queued-requests against
// --max-connections).
//
// Properties: nothing crashes or hangs; the exit code is 0 (Main would run
// it) or 2 (a usage error), never the definition error 1, since the app is
// complete.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "app/app.h"

namespace {

void Require(bool condition) {
  if (!condition) std::abort();
}

struct Added {
  int64_t n = 0;
  static auto Json() {
    return cqrs::json::Shape<Added>().Field("n", &Added::n);
  }
};
struct Tally {
  int64_t total = 0;
};
using Tallies = cqrs::AggregateOf<Tally, Added>;

// A small complete app: an event, an aggregate, a command, a projection.
cqrs::App& TallyApp() {
  static cqrs::App* app = [] {
    auto* a = new cqrs::App("tally");
    a->Event<Added>("Added");
    Tallies& tallies = a->Aggregate<Tally, Added>("tally");
    tallies.On<Added>([](Tally& t, const Added& e) { t.total += e.n; });
    a->Command<Added>("POST", "/tallies/{id}/add", tallies,
                      [](const Tally&, const Added& e) -> Tallies::Decision {
                        return Tallies::Emit(e);
                      });
    a->Projection("totals")
        .Table("totals", "CREATE TABLE {table} (id text PRIMARY KEY)")
        .On<Added>([](cqrs::ReadModel&, const cqrs::Recorded<Added>&) {});
    return a;
  }();
  return *app;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // a command line, not a file
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args = {"tally"};
  for (absl::string_view arg :
       absl::StrSplit(text, absl::ByAnyChar(std::string("\n\0", 2)))) {
    args.emplace_back(arg);
  }
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  // Usage errors and --help go to the standard streams: thrown away here.
  std::ostringstream sink;
  std::streambuf* out = std::cout.rdbuf(sink.rdbuf());
  std::streambuf* err = std::cerr.rdbuf(sink.rdbuf());
  const int code =
      TallyApp().CheckCommandLine(static_cast<int>(args.size()), argv.data());
  std::cout.rdbuf(out);
  std::cerr.rdbuf(err);
  Require(code == 0 || code == 2);
  return 0;
}
