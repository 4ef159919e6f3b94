// What an App holds between its declarations and Main(): shared by app.cc
// (declarations) and cli.cc / runtime.cc (running them).
#ifndef APP_INTERNAL_PARTS_H_
#define APP_INTERNAL_PARTS_H_

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <typeinfo>
#include <vector>

#include "app/app.h"

namespace cqrs {

struct App::Parts {
  struct CommandRoute {
    std::string method;
    std::string pattern;
    RawCommand handler;
    std::function<std::string()> name;
    std::string body_schema;  // JSON Schema; empty for raw routes
  };
  std::vector<CommandRoute> command_routes;
  struct PlainRoute {
    std::string method;
    std::string pattern;
    http::Handler handler;
    http::RouteOptions options;
  };
  std::vector<PlainRoute> plain_routes;
  std::vector<std::unique_ptr<ProjectionBuilder>> builders;
  std::vector<projections::Projection> raw_projections;
  std::vector<commands::ProcessManager> process_managers;
  std::vector<queries::QueryRoute> queries;
  // App::Consume; Finalize() fills in the default dead-letter exchange.
  std::vector<std::unique_ptr<ConsumerBuilder>> consumers;
  std::string openapi;  // empty: generated
  struct Published {
    const std::type_info* type;
    std::string public_type;
    int version;
    std::string data_schema;
    std::function<absl::StatusOr<std::string>(absl::string_view)> to_public;
  };
  std::vector<Published> published;
  std::unique_ptr<integration::Publication> publication;

  // Filled by Finalize():
  // Every read model, typed and raw, in declaration order.
  std::vector<projections::Projection> projections;
  // Declared aggregate categories, longest first (IdOf).
  std::vector<std::string> categories;
};

}  // namespace cqrs

#endif  // APP_INTERNAL_PARTS_H_
