// The `bank` command: the example bank (example_app/bank_app.h) with the
// command line every app gets (app/app.h): serve, project, migrate,
// projections. Exit codes: 0 success, 1 runtime failure, 2 usage error.
#include "app/app.h"
#include "example_app/bank_app.h"

int main(int argc, char** argv) {
  cqrs::App app("bank", bank::BankOptions());
  bank::DeclareBank(app);
  return app.Main(argc, argv);
}
