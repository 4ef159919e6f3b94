#include "app/app.h"

#include <cxxabi.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "app/internal/parts.h"
#include "framework/json.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace cqrs {

absl::Status Reject(absl::string_view code, absl::string_view message) {
  return WithErrorCode(absl::FailedPreconditionError(message), code);
}

absl::Status NotFound(absl::string_view code, absl::string_view message) {
  return WithErrorCode(absl::NotFoundError(message), code);
}

std::string ReadModel::Sql(absl::string_view sql) const {
  std::string out;
  out.reserve(sql.size() + 32);
  size_t at = 0;
  while (true) {
    const size_t open = sql.find('{', at);
    if (open == absl::string_view::npos) break;
    const size_t close = sql.find('}', open);
    if (close == absl::string_view::npos) break;
    const absl::string_view name = sql.substr(open + 1, close - open - 1);
    const bool identifier =
        !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
          return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_';
        });
    out.append(sql.data() + at, open - at);
    if (!identifier) {
      // Not a placeholder ('{}' in a JSON literal, an array '{1,2}').
      out.append(sql.data() + open, close + 1 - open);
    } else {
      try {
        out.append(ctx_.Table(name));
      } catch (const std::exception&) {
        throw std::invalid_argument(absl::StrCat(
            "{", name, "} in SQL names no table of this projection"));
      }
    }
    at = close + 1;
  }
  out.append(sql.data() + at, sql.size() - at);
  return out;
}

namespace app_internal {

std::string TypeName(const std::type_info& type) {
  int status = 0;
  char* demangled = abi::__cxa_demangle(type.name(), nullptr, nullptr, &status);
  if (status != 0 || demangled == nullptr) return type.name();
  std::string name(demangled);
  std::free(demangled);
  return name;
}

const EventDeclaration* Declarations::Find(std::type_index type) const {
  auto it = events.find(type);
  return it == events.end() ? nullptr : &it->second;
}

absl::StatusOr<std::string> Upcast(const EventDeclaration& declaration,
                                   int schema_version, absl::string_view json) {
  if (schema_version > declaration.schema_version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "event '", declaration.name, "' has schema version ", schema_version,
        ", newer than this build's ", declaration.schema_version));
  }
  std::string data(json);
  for (int v = schema_version; v < declaration.schema_version; ++v) {
    auto it = declaration.upcasters.find(v);
    if (it == declaration.upcasters.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("event '", declaration.name, "': no upcaster from ",
                       "schema version ", v));
    }
    ASSIGN_OR_RETURN(data, it->second(data));
  }
  return data;
}

absl::Status ValidateId(absl::string_view id, absl::string_view what) {
  bool ok = !id.empty() && id.size() <= 128 && IsValidUtf8(id);
  for (char c : id) {
    ok = ok && static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
  }
  if (ok) return absl::OkStatus();
  return InvalidRequest(absl::StrCat(
      what, " must be 1 to 128 bytes of UTF-8 without control characters"));
}

std::string DefaultCommandResponse(absl::string_view id, int64_t version,
                                   const eventstore::Position& position) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> w(buffer);
  w.StartObject();
  w.Key("id");
  w.String(id.data(), static_cast<rapidjson::SizeType>(id.size()));
  w.Key("version");
  w.Int64(version);
  w.Key("position");
  const std::string token = position.ToToken();
  w.String(token.data(), static_cast<rapidjson::SizeType>(token.size()));
  w.EndObject();
  return std::string(buffer.GetString(), buffer.GetSize());
}

}  // namespace app_internal

// --- ProjectionBuilder -------------------------------------------------------

ProjectionBuilder::ProjectionBuilder(std::string name) {
  p_.name = std::move(name);
}

ProjectionBuilder& ProjectionBuilder::Version(int version) {
  p_.version = version;
  return *this;
}

ProjectionBuilder& ProjectionBuilder::Table(
    std::string name, std::string ddl,
    std::vector<std::string> deferred_indexes) {
  p_.tables.emplace_back(std::move(name), std::move(ddl),
                         std::move(deferred_indexes));
  return *this;
}

ProjectionBuilder& ProjectionBuilder::OnError(projections::ErrorPolicy policy) {
  p_.on_error = policy;
  return *this;
}

projections::Projection ProjectionBuilder::Build(
    app_internal::Declarations& declarations,
    std::function<std::string(absl::string_view)> id_of) const {
  projections::Projection p = p_;
  // By stored name: the handler and how to read older schema versions.
  struct Route {
    const app_internal::EventDeclaration* declaration;
    const Handler* handler;
  };
  auto routes = std::make_shared<std::map<std::string, Route, std::less<>>>();
  for (const Handler& h : handlers_) {
    const app_internal::EventDeclaration* d = declarations.Find(h.type);
    if (d == nullptr) {
      declarations.Error(absl::StrCat("projection '", p.name,
                                      "' handles event type ", h.type_name,
                                      " that was never declared"));
      continue;
    }
    if (!routes->emplace(d->name, Route{d, &h}).second) {
      declarations.Error(absl::StrCat("projection '", p.name,
                                      "' handles event '", d->name, "' twice"));
      continue;
    }
    p.event_types.push_back(d->name);
  }
  if (handlers_.empty()) {
    declarations.Error(
        absl::StrCat("projection '", p.name, "' handles no event (On<E>)"));
  }
  p.apply = [routes, id_of = std::move(id_of)](
                projections::ProjectionContext& ctx,
                projections::EventBatch events) -> absl::Status {
    ReadModel db(ctx);
    for (const eventstore::RecordedEvent& e : events) {
      auto it = routes->find(e.event_type);
      if (it == routes->end()) continue;  // not subscribed (cannot happen)
      ASSIGN_OR_RETURN(std::string json,
                       app_internal::Upcast(*it->second.declaration,
                                            e.schema_version, e.data));
      RETURN_IF_ERROR(
          it->second.handler->apply(db, e, json, id_of(e.stream_id)));
    }
    return absl::OkStatus();
  };
  return p;
}

// --- ConsumerBuilder ---------------------------------------------------------

ConsumerBuilder& ConsumerBuilder::Prefetch(int n) {
  spec_.prefetch = n;
  return *this;
}

ConsumerBuilder& ConsumerBuilder::Concurrency(int n) {
  spec_.concurrency = n;
  return *this;
}

ConsumerBuilder& ConsumerBuilder::IdFrom(
    std::function<std::string(const integration::amqp::Delivery&)> fn) {
  spec_.id_from = std::move(fn);
  return *this;
}

ConsumerBuilder& ConsumerBuilder::DeadLetterExchange(std::string name) {
  spec_.dead_letter_exchange = std::move(name);
  return *this;
}

ConsumerBuilder& ConsumerBuilder::Bind(std::string exchange,
                                       std::string routing_key) {
  spec_.bindings.push_back({std::move(exchange), std::move(routing_key)});
  return *this;
}

ConsumerBuilder& ConsumerBuilder::Body(
    std::function<
        absl::StatusOr<std::string>(const integration::amqp::Delivery&)>
        fn) {
  spec_.body = std::move(fn);
  return *this;
}

// --- App ---------------------------------------------------------------------

App::App(std::string name, AppOptions options)
    : name_(std::move(name)),
      options_(std::move(options)),
      parts_(std::make_unique<Parts>()) {
  if (options_.schema.empty()) {
    options_.schema = absl::StrReplaceAll(name_, {{"-", "_"}});
  }
  if (options_.data_dir.empty()) {
    options_.data_dir = absl::StrCat("./", name_, "-data");
  }
  if (options_.event_source.empty()) {
    options_.event_source = absl::StrCat("/", name_);
  }
  parts_->publication =
      std::make_unique<integration::Publication>(options_.event_source);
}

void App::AddPublished(
    const std::type_info& type, std::string public_type, int version,
    std::string data_schema,
    std::function<absl::StatusOr<std::string>(absl::string_view)> to_public) {
  parts_->published.push_back({&type, std::move(public_type), version,
                               std::move(data_schema), std::move(to_public)});
}

const integration::Publication& App::publication() const {
  return *parts_->publication;
}

App::~App() = default;

std::string App::DefaultCommandName(absl::string_view pattern) {
  std::vector<absl::string_view> segments = absl::StrSplit(pattern, '/');
  for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
    if (!it->empty() && it->front() != '{') return std::string(*it);
  }
  return "command";
}

void App::AddCommandRoute(std::string method, std::string pattern,
                          RawCommand handler,
                          std::function<std::string()> name) {
  Parts::CommandRoute route;
  route.method = std::move(method);
  route.pattern = std::move(pattern);
  route.handler = std::move(handler);
  route.name = std::move(name);
  parts_->command_routes.push_back(std::move(route));
}

void App::SetLastCommandSchema(std::string schema) {
  parts_->command_routes.back().body_schema = std::move(schema);
}

ConsumerBuilder& App::Consume(std::string queue, std::string method,
                              std::string pattern) {
  ConsumerBuilder::Spec spec;
  spec.queue = std::move(queue);
  spec.method = absl::AsciiStrToUpper(method);
  spec.pattern = std::move(pattern);
  parts_->consumers.push_back(
      std::make_unique<ConsumerBuilder>(std::move(spec)));
  return *parts_->consumers.back();
}

ProjectionBuilder& App::Projection(std::string name) {
  parts_->builders.push_back(
      std::make_unique<ProjectionBuilder>(std::move(name)));
  return *parts_->builders.back();
}

void App::AddProjection(projections::Projection projection) {
  parts_->raw_projections.push_back(std::move(projection));
}

void App::AddProcessManager(commands::ProcessManager pm) {
  parts_->process_managers.push_back(std::move(pm));
}

void App::AddQuery(queries::QueryRoute route) {
  parts_->queries.push_back(std::move(route));
}

void App::AddRoute(std::string method, std::string pattern,
                   http::Handler handler, http::RouteOptions options) {
  Parts::PlainRoute route;
  route.method = std::move(method);
  route.pattern = std::move(pattern);
  route.handler = std::move(handler);
  route.options = options;
  parts_->plain_routes.push_back(std::move(route));
}

void App::SetOpenApi(std::string document) {
  parts_->openapi = std::move(document);
}

std::string App::IdOf(absl::string_view stream) const {
  for (const std::string& category : parts_->categories) {
    if (stream.size() > category.size() + 1 &&
        absl::StartsWith(stream, category) && stream[category.size()] == '-') {
      return std::string(stream.substr(category.size() + 1));
    }
  }
  return std::string(stream);
}

std::vector<std::string> App::Finalize() {
  if (finalized_) return declarations_.errors_;
  finalized_ = true;
  std::set<std::string> names;
  for (const auto& [type, d] : declarations_.events) names.insert(d.name);
  for (const auto& a : aggregates_) {
    a->Finalize(declarations_);
    parts_->categories.push_back(a->category());
  }
  std::sort(parts_->categories.begin(), parts_->categories.end(),
            [](const std::string& a, const std::string& b) {
              return a.size() > b.size();
            });
  for (Parts::Published& p : parts_->published) {
    const app_internal::EventDeclaration* d =
        declarations_.Find(std::type_index(*p.type));
    if (d == nullptr) {
      declarations_.Error(
          absl::StrCat("published event type ", app_internal::TypeName(*p.type),
                       " was never declared (app.Event<T>(\"Name\"))"));
      continue;
    }
    integration::PublishedType published;
    published.stored_type = d->name;
    published.public_type = std::move(p.public_type);
    published.version = p.version;
    published.data_schema = std::move(p.data_schema);
    if (p.to_public) {
      published.to_public = [declaration = *d, map = std::move(p.to_public)](
                                const eventstore::RecordedEvent& event)
          -> absl::StatusOr<std::string> {
        absl::StatusOr<std::string> current =
            app_internal::Upcast(declaration, event.schema_version, event.data);
        if (!current.ok()) return current.status();
        return map(*current);
      };
    }
    if (absl::Status s = parts_->publication->Add(std::move(published));
        !s.ok()) {
      declarations_.Error(std::string(s.message()));
    }
  }
  parts_->published.clear();
  auto id_of = [this](absl::string_view stream) { return IdOf(stream); };
  for (const auto& b : parts_->builders) {
    parts_->projections.push_back(b->Build(declarations_, id_of));
  }
  for (projections::Projection& p : parts_->raw_projections) {
    for (const std::string& type : p.event_types) {
      if (names.count(type) == 0) {
        declarations_.Error(absl::StrCat("projection '", p.name,
                                         "' subscribes to event '", type,
                                         "', which was never declared"));
      }
    }
    parts_->projections.push_back(std::move(p));
  }
  parts_->raw_projections.clear();
  std::set<std::string> projection_names;
  for (const projections::Projection& p : parts_->projections) {
    if (absl::Status s = projections::ValidateProjection(p); !s.ok()) {
      declarations_.Error(std::string(s.message()));
    }
    if (!projection_names.insert(p.name).second) {
      declarations_.Error(
          absl::StrCat("projection '", p.name, "' declared twice"));
    }
  }
  for (const queries::QueryRoute& q : parts_->queries) {
    for (const std::string& name : q.projections) {
      if (projection_names.count(name) == 0) {
        declarations_.Error(absl::StrCat("query route ", q.pattern,
                                         " reads projection '", name,
                                         "', which was never declared"));
      }
    }
  }
  for (const commands::ProcessManager& pm : parts_->process_managers) {
    for (const std::string& type : pm.event_types) {
      if (names.count(type) == 0) {
        declarations_.Error(absl::StrCat("process manager '", pm.name,
                                         "' subscribes to event '", type,
                                         "', which was never declared"));
      }
    }
    if (!projection_names.insert(pm.name).second) {
      declarations_.Error(absl::StrCat(
          "process manager '", pm.name,
          "' has the name of another projection or process manager"));
    }
  }
  FinalizeConsumers();
  return declarations_.errors_;
}

void App::FinalizeConsumers() {
  std::set<std::string> queues;
  for (const auto& c : parts_->consumers) {
    ConsumerBuilder::Spec& spec = c->spec_;
    const std::string what =
        absl::StrCat("consumer of queue '", spec.queue, "' (", spec.method, " ",
                     spec.pattern, ")");
    if (spec.queue.empty() || spec.queue.size() > 200) {
      declarations_.Error(
          absl::StrCat(what, ": the queue name must be 1 to 200 bytes"));
    }
    if (!queues.insert(spec.queue).second) {
      declarations_.Error(absl::StrCat(what, ": the queue is consumed twice"));
    }
    if (spec.prefetch < 1 || spec.prefetch > 65535) {
      declarations_.Error(absl::StrCat(what, ": Prefetch(", spec.prefetch,
                                       ") is not in 1..65535"));
    }
    if (spec.concurrency < 1 || spec.concurrency > 256) {
      declarations_.Error(absl::StrCat(what, ": Concurrency(", spec.concurrency,
                                       ") is not in 1..256"));
    }
    const bool declared = std::any_of(
        parts_->command_routes.begin(), parts_->command_routes.end(),
        [&](const Parts::CommandRoute& r) {
          return absl::AsciiStrToUpper(r.method) == spec.method &&
                 r.pattern == spec.pattern;
        });
    if (!declared) {
      declarations_.Error(absl::StrCat(what, ": no command is declared at ",
                                       spec.method, " ", spec.pattern,
                                       " (App::Command)"));
    }
    // Only {id} can be filled from a message.
    for (absl::string_view segment : absl::StrSplit(spec.pattern, '/')) {
      if (!segment.empty() && segment.front() == '{' && segment != "{id}") {
        declarations_.Error(absl::StrCat(what, ": the pattern's parameter ",
                                         segment,
                                         " cannot be filled from a message "
                                         "(only {id} can)"));
      }
    }
    // AMQP short strings: at most 255 bytes; "amq." names are the broker's.
    for (const ConsumerBuilder::Spec::Binding& b : spec.bindings) {
      const std::string bind = absl::StrCat(what, ": Bind(\"", b.exchange,
                                            "\", \"", b.routing_key, "\")");
      if (b.exchange.empty() || b.exchange.size() > 255) {
        declarations_.Error(
            absl::StrCat(bind, ": the exchange name must be 1 to 255 bytes"));
      } else if (absl::StartsWith(b.exchange, "amq.")) {
        declarations_.Error(absl::StrCat(
            bind, ": exchanges named amq.* are reserved to the broker"));
      }
      if (b.routing_key.empty() || b.routing_key.size() > 255) {
        declarations_.Error(
            absl::StrCat(bind, ": the routing key must be 1 to 255 bytes"));
      }
    }
    if (spec.dead_letter_exchange.empty()) {
      spec.dead_letter_exchange = absl::StrCat(spec.queue, ".dlx");
    }
  }
}

}  // namespace cqrs
