// The `bank project` and `bank projections ...` commands: running the
// projections in a worker process, and operating them from a terminal.
//
//   int code = bank::RunProjectionsCommand(pool, "bank", {"rebuild", "--all"});
//
// Thread-safety: for main() only.
#ifndef EXAMPLE_APP_PROJECTION_CLI_H_
#define EXAMPLE_APP_PROJECTION_CLI_H_

#include <string>
#include <vector>

#include "framework/pg_pool.h"

namespace bank {

// `bank projections <args>` on a migrated `schema`: list, status [--json],
// rebuild <name>... | --all, parked [<name>], replay-parked <name>,
// resume <name>. Returns the process exit code (0, 1, or 2 for
// a usage error); prints errors to stderr.
int RunProjectionsCommand(cqrs::PgPool& pool, const std::string& schema,
                          const std::vector<std::string>& args);

// Usage of `bank projections`, for --help.
extern const char kProjectionsHelp[];

// `bank project`: runs every projection until SIGINT or SIGTERM. Returns
// the exit code.
int RunProjector(cqrs::PgPool& pool, const std::string& schema);

}  // namespace bank

#endif  // EXAMPLE_APP_PROJECTION_CLI_H_
