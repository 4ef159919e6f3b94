# Sources of the HTTP runtime, relative to framework/ (included by
# framework/CMakeLists.txt).
set(CQRS_FRAMEWORK_HTTP_SOURCES
  http/address_policy.cc
  http/auth.cc
  http/internal/failure_limiter.cc
  http/internal/tls_context.cc
  http/internal/utf8.cc
  http/client.cc
  http/json_body.cc
  http/message.cc
  http/request_metrics.cc
  http/router.cc
  http/server.cc
  http/status_mapping.cc
)
