# Warning flags for our own code. Third-party headers come in through
# imported targets and are therefore system includes.
set(CQRS_WARNING_FLAGS -Wall -Wextra -Werror)
if(CQRS_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # The instrumentation misleads GCC 12's flow analysis into
  # maybe-uninitialized warnings inside libstdc++ (std::regex, std::function);
  # the normal build keeps the warning.
  list(APPEND CQRS_WARNING_FLAGS -Wno-maybe-uninitialized)
endif()

# cqrs_library(<folder> SOURCES ... DEPS ...)
# One static library per folder, named cqrs_<folder> with alias cqrs::<folder>.
function(cqrs_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(cqrs_${name} STATIC ${ARG_SOURCES})
  add_library(cqrs::${name} ALIAS cqrs_${name})
  target_include_directories(cqrs_${name} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
  # Public headers need C++17; installed targets pass that on to users.
  target_compile_features(cqrs_${name} PUBLIC cxx_std_17)
  target_compile_options(cqrs_${name} PRIVATE ${CQRS_WARNING_FLAGS})
  target_link_libraries(cqrs_${name} PUBLIC ${ARG_DEPS})
  if(CQRS_SANITIZE)
    # Instrumented code needs the sanitizer's runtime wherever it is linked,
    # also in an app built against an installed sanitizer build.
    target_link_options(cqrs_${name} INTERFACE -fsanitize=${CQRS_SANITIZE})
  endif()
endfunction()

# A folder that later issues fill: an interface library with no API yet, so
# the dependency graph is already in place.
function(cqrs_placeholder_library name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  add_library(cqrs_${name} INTERFACE)
  add_library(cqrs::${name} ALIAS cqrs_${name})
  target_link_libraries(cqrs_${name} INTERFACE ${ARG_DEPS})
endfunction()

# What every executable of a sanitizer build needs: under ThreadSanitizer,
# framework/internal/tsan_abseil.cc, which shows TSan the synchronization
# inside Debian's uninstrumented Abseil.
function(cqrs_sanitizer_support name)
  if(CQRS_SANITIZE STREQUAL "thread")
    target_sources(${name} PRIVATE
      ${PROJECT_SOURCE_DIR}/framework/internal/tsan_abseil.cc)
    target_link_libraries(${name} PRIVATE ${CMAKE_DL_LIBS} absl::synchronization)
  endif()
endfunction()

function(cqrs_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  cqrs_sanitizer_support(${name})
  target_compile_options(${name} PRIVATE ${CQRS_WARNING_FLAGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()
