// Metadata that a command stamps into every event it appends.
//
//   CommandMetadata meta = CommandMetadata::ForCommand(correlation_id, actor);
//   event.metadata = meta.ToJson();
//   // {"command_id":"...","correlation_id":"...","causation_id":"...",
//   //  "actor":"3f9a0c1b2d4e"}
//
// The command id identifies one execution request; the correlation id ties
// together everything that follows from one outside request (HTTP
// X-Correlation-Id); the causation id names what directly caused the
// command: the command itself for outside requests, the triggering event for
// commands a process manager sends.
//
// Who did it:
//  - `actor` is whoever sent the command: the authenticated API key's id
//    (12 hex digits, http::Principal::id) for HTTP commands, "anonymous"
//    (http::kAnonymousActor) when the server runs without authentication,
//    and "process:<name>" (ProcessActor(), commands/process_manager.h) for
//    the commands of a process manager. The three forms never collide.
//  - `on_behalf_of`, only on a process manager's commands, is the actor of
//    the outside request the chain of events started from: a chain of
//    process managers keeps the first key. Left out when unknown (a trigger
//    stored before actors were recorded).
//
// The JSON members come in this order: command_id, correlation_id,
// causation_id, actor, on_behalf_of (when set). Events stored by earlier
// builds have neither actor nor on_behalf_of; readers must tolerate that.
//
// Thread-safety: a value type.
#ifndef COMMANDS_COMMAND_METADATA_H_
#define COMMANDS_COMMAND_METADATA_H_

#include <string>

#include "absl/strings/string_view.h"

namespace cqrs::commands {

struct CommandMetadata {
  std::string command_id;
  std::string correlation_id;
  std::string causation_id;
  // Written as "anonymous" when empty, so every event names an actor.
  std::string actor;
  // Left out of the JSON when empty.
  std::string on_behalf_of;

  // A new command id; the correlation id given (or a new one when empty);
  // causation id = the command id; `actor` as given (an HTTP command passes
  // http::Request::actor()).
  static CommandMetadata ForCommand(absl::string_view correlation_id,
                                    absl::string_view actor);

  // The metadata JSON object stamped into events, members in the order
  // above.
  std::string ToJson() const;
};

}  // namespace cqrs::commands

#endif  // COMMANDS_COMMAND_METADATA_H_
