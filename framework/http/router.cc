#include "framework/http/router.h"

#include <algorithm>
#include <atomic>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "framework/http/status_mapping.h"

namespace cqrs {
namespace http {

class Responder::State {
 public:
  explicit State(std::function<void(Response)> deliver)
      : deliver_(std::move(deliver)) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  ~State() {
    if (!called_.exchange(true)) {
      Response response = ErrorResponse(500, "internal", "internal error");
      response.log_detail = "the handler dropped its Responder unanswered";
      deliver_(std::move(response));
    }
  }

  void Deliver(Response response) {
    if (called_.exchange(true)) return;
    deliver_(std::move(response));
  }

 private:
  std::atomic<bool> called_{false};
  // Constant after construction.
  const std::function<void(Response)> deliver_;
};

Responder::Responder(std::function<void(Response)> deliver)
    : state_(std::make_shared<State>(std::move(deliver))) {}

void Responder::operator()(Response response) const {
  state_->Deliver(std::move(response));
}

Handler FromStatusOr(StatusOrHandler handler) {
  return [handler = std::move(handler)](const Request& request) {
    absl::StatusOr<Response> response = handler(request);
    if (!response.ok()) return ResponseFromStatus(response.status());
    return *std::move(response);
  };
}

namespace {

bool IsTokenChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         absl::string_view("!#$%&'*+-.^_`|~").find(c) !=
             absl::string_view::npos;
}

bool IsParam(absl::string_view segment) {
  return segment.size() >= 2 && segment.front() == '{' && segment.back() == '}';
}

bool IsValidParamName(absl::string_view name) {
  if (name.empty() || absl::ascii_isdigit(static_cast<unsigned char>(name[0])))
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

// "/a/b" -> {"a", "b"}; "/" -> {""}.
std::vector<std::string> SplitPath(absl::string_view path) {
  return absl::StrSplit(path.substr(1), '/');
}

// Compares the specificity of two routes that both match one path: the one
// with a literal where the other has a parameter, first from the left, wins.
bool MoreSpecific(const Route& a, const Route& b) {
  for (size_t i = 0; i < a.segments.size() && i < b.segments.size(); ++i) {
    const bool a_param = IsParam(a.segments[i]);
    const bool b_param = IsParam(b.segments[i]);
    if (a_param != b_param) return !a_param;
  }
  return false;
}

}  // namespace

void Router::Add(absl::string_view method, absl::string_view pattern,
                 Handler handler, RouteOptions options) {
  Route route;
  route.method = std::string(method);
  route.pattern = std::string(pattern);
  route.options = options;
  route.handler = std::move(handler);
  if (!route.handler && status_.ok()) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("route ", method, " ", pattern, " has no handler"));
  }
  AddRoute(std::move(route));
}

void Router::AddAsync(absl::string_view method, absl::string_view pattern,
                      AsyncHandler handler, RouteOptions options) {
  Route route;
  route.method = std::string(method);
  route.pattern = std::string(pattern);
  route.options = options;
  route.async_handler = std::move(handler);
  if (!route.async_handler && status_.ok()) {
    status_ = absl::InvalidArgumentError(
        absl::StrCat("route ", method, " ", pattern, " has no handler"));
  }
  AddRoute(std::move(route));
}

void Router::RecordError(absl::Status error) {
  if (status_.ok()) status_ = std::move(error);
}

void Router::AddRoute(Route route) {
  const auto fail = [&](absl::Status error) {
    if (status_.ok()) status_ = std::move(error);
  };
  absl::AsciiStrToUpper(&route.method);
  if (route.method.empty() ||
      !std::all_of(route.method.begin(), route.method.end(), IsTokenChar)) {
    fail(absl::InvalidArgumentError(absl::StrCat(
        "route method \"", route.method, "\" is not an HTTP token")));
    return;
  }
  if (route.pattern.empty() || route.pattern[0] != '/' ||
      route.pattern.find_first_of("?#") != std::string::npos) {
    fail(absl::InvalidArgumentError(
        absl::StrCat("route pattern \"", route.pattern,
                     "\" must be a path starting with '/'")));
    return;
  }
  route.segments = SplitPath(route.pattern);
  std::vector<absl::string_view> names;
  for (const std::string& segment : route.segments) {
    if (IsParam(segment)) {
      const absl::string_view name =
          absl::string_view(segment).substr(1, segment.size() - 2);
      if (!IsValidParamName(name) ||
          std::find(names.begin(), names.end(), name) != names.end()) {
        fail(absl::InvalidArgumentError(absl::StrCat(
            "route pattern \"", route.pattern,
            "\" has a malformed or repeated parameter \"", segment, "\"")));
        return;
      }
      names.push_back(name);
    } else if (segment.find_first_of("{}") != std::string::npos) {
      fail(absl::InvalidArgumentError(absl::StrCat(
          "route pattern \"", route.pattern,
          "\" mixes a parameter with literal text in \"", segment, "\"")));
      return;
    }
  }
  for (const auto& existing : routes_) {
    if (existing->method == route.method &&
        existing->segments.size() == route.segments.size()) {
      bool same_shape = true;
      for (size_t i = 0; i < route.segments.size() && same_shape; ++i) {
        const bool a_param = IsParam(existing->segments[i]);
        const bool b_param = IsParam(route.segments[i]);
        same_shape = a_param == b_param &&
                     (a_param || existing->segments[i] == route.segments[i]);
      }
      if (same_shape) {
        fail(absl::AlreadyExistsError(
            absl::StrCat("route ", route.method, " ", route.pattern,
                         " duplicates ", existing->pattern)));
        return;
      }
    }
  }
  routes_.push_back(std::make_unique<Route>(std::move(route)));
}

RouteMatch Router::Match(absl::string_view method,
                         absl::string_view raw_path) const {
  RouteMatch match;
  if (raw_path.empty() || raw_path[0] != '/') return match;
  // Segments are decoded one by one, so that "%2F" stays inside a segment.
  std::vector<std::string> segments = SplitPath(raw_path);
  for (std::string& segment : segments) {
    absl::StatusOr<std::string> decoded =
        PercentDecode(segment, DecodeMode::kPath);
    if (!decoded.ok()) {
      match.result = RouteMatch::Result::kBadPath;
      return match;
    }
    segment = *std::move(decoded);
  }
  const Route* best = nullptr;
  // HEAD is served by the GET route of the path unless one is registered.
  const Route* best_get = nullptr;
  std::vector<std::string> methods;
  for (const auto& route : routes_) {
    if (route->segments.size() != segments.size()) continue;
    bool matches = true;
    for (size_t i = 0; i < segments.size() && matches; ++i) {
      matches = IsParam(route->segments[i]) ? !segments[i].empty()
                                            : route->segments[i] == segments[i];
    }
    if (!matches) continue;
    methods.push_back(route->method);
    if (route->method == method) {
      if (best == nullptr || MoreSpecific(*route, *best)) best = route.get();
    } else if (method == "HEAD" && route->method == "GET") {
      if (best_get == nullptr || MoreSpecific(*route, *best_get)) {
        best_get = route.get();
      }
    }
  }
  if (best == nullptr) best = best_get;
  if (best == nullptr) {
    if (methods.empty()) {
      match.result = RouteMatch::Result::kNotFound;
      return match;
    }
    if (std::find(methods.begin(), methods.end(), "GET") != methods.end()) {
      methods.push_back("HEAD");
    }
    methods.push_back("OPTIONS");
    std::sort(methods.begin(), methods.end());
    methods.erase(std::unique(methods.begin(), methods.end()), methods.end());
    match.allowed_methods = std::move(methods);
    match.result = method == "OPTIONS" ? RouteMatch::Result::kOptions
                                       : RouteMatch::Result::kMethodNotAllowed;
    return match;
  }
  for (size_t i = 0; i < segments.size(); ++i) {
    const std::string& segment = best->segments[i];
    if (!IsParam(segment)) continue;
    match.params.emplace_back(segment.substr(1, segment.size() - 2),
                              std::move(segments[i]));
  }
  match.result = RouteMatch::Result::kFound;
  match.route = best;
  return match;
}

std::vector<std::pair<std::string, std::string>> Router::Routes() const {
  std::vector<std::pair<std::string, std::string>> routes;
  routes.reserve(routes_.size());
  for (const auto& route : routes_) {
    routes.emplace_back(route->method, route->pattern);
  }
  return routes;
}

std::vector<const Route*> Router::RouteList() const {
  std::vector<const Route*> routes;
  routes.reserve(routes_.size());
  for (const auto& route : routes_) routes.push_back(route.get());
  return routes;
}

}  // namespace http
}  // namespace cqrs
