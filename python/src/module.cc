// prism._prism: the Python binding over the C++ core worker. The prism package (Python) builds
// Ray's API on these few calls; values cross as bytes (pickled by the package) plus the handles
// of the refs inside them. One file per area: objects.cc, tasks.cc, gpu.cc (shared helpers in
// binding.h); this one holds the errors, init and shutdown.
#include "binding.h"

namespace py = pybind11;

namespace prism::binding {
void BindObjects(py::module_& m);
void BindTasks(py::module_& m);
void BindGpu(py::module_& m);
}  // namespace prism::binding

PYBIND11_MODULE(_prism, m) {
  using namespace prism;
  m.doc() = "prism's core worker, for the prism package";

  // Errors: the package turns these into its own (Ray-named) exception classes.
  static py::exception<Error> error(m, "Error");
  static py::exception<TaskError> task_error(m, "TaskError", error.ptr());
  static py::exception<WorkerCrashedError> crashed(m, "WorkerCrashedError", error.ptr());
  static py::exception<InfeasibleError> infeasible(m, "InfeasibleError", error.ptr());
  static py::exception<GetTimeoutError> timeout(m, "GetTimeoutError", error.ptr());
  static py::exception<ObjectLostError> lost(m, "ObjectLostError", error.ptr());
  static py::exception<OwnerDiedError> owner_died(m, "OwnerDiedError", error.ptr());
  static py::exception<ActorDiedError> actor_died(m, "ActorDiedError", error.ptr());
  static py::exception<TaskCancelledError> cancelled(m, "TaskCancelledError", error.ptr());
  static py::exception<ObjectStoreFullError> store_full(m, "ObjectStoreFullError", error.ptr());
  static py::exception<InvalidArgumentError> invalid(m, "InvalidArgumentError", error.ptr());
  static py::exception<RuntimeError> runtime(m, "RuntimeError", error.ptr());
  static py::exception<collective::CollectiveError> collective_error(m, "CollectiveError",
                                                                     error.ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TaskError& e) {
      // (function, remote type, message with the remote traceback, pickled exception)
      py::tuple args =
          py::make_tuple(e.function(), e.remote_type(), e.remote_message(), py::bytes(e.payload()));
      PyErr_SetObject(task_error.ptr(), args.ptr());
    } catch (const WorkerCrashedError& e) {
      crashed(e.what());
    } catch (const InfeasibleError& e) {
      infeasible(e.what());
    } catch (const GetTimeoutError& e) {
      timeout(e.what());
    } catch (const ObjectLostError& e) {
      lost(e.what());
    } catch (const OwnerDiedError& e) {
      owner_died(e.what());
    } catch (const ActorDiedError& e) {
      actor_died(e.what());
    } catch (const TaskCancelledError& e) {
      cancelled(e.what());
    } catch (const collective::CollectiveError& e) {
      collective_error(e.what());
    } catch (const ObjectStoreFullError& e) {
      store_full(e.what());
    } catch (const InvalidArgumentError& e) {
      invalid(e.what());
    } catch (const RuntimeError& e) {
      runtime(e.what());
    } catch (const Error& e) {
      error(e.what());
    }
  });

  m.def("is_worker_process", &IsWorkerProcess);
  m.def("is_initialized", &IsInitialized);

  m.def(
      "init",
      [](const std::string& address, double num_cpus, int num_gpus, uint64_t object_store_memory,
         uint64_t memory, const std::map<std::string, double>& resources,
         const std::string& log_level, const std::vector<std::string>& worker_argv,
         const std::vector<std::string>& code_search_path, const std::string& gpu_topology,
         bool timeline, const std::vector<std::string>& worker_launch_prefix,
         bool object_store_prefault) {
        InitOptions o;
        o.object_store_prefault = object_store_prefault;
        o.gpu_topology = gpu_topology;
        o.timeline = timeline;
        o.worker_launch_prefix = worker_launch_prefix;
        o.address = address;
        o.num_cpus = num_cpus;
        o.num_gpus = num_gpus;
        o.object_store_memory = object_store_memory;
        o.memory = memory;
        o.resources = resources;
        o.log_level = log_level;
        o.worker_argv = worker_argv;
        o.code_search_path = code_search_path;
        binding::ReleaseGil release;
        Init(o);
      },
      py::arg("address"), py::arg("num_cpus"), py::arg("num_gpus"), py::arg("object_store_memory"),
      py::arg("memory"), py::arg("resources"), py::arg("log_level"), py::arg("worker_argv"),
      py::arg("code_search_path"), py::arg("gpu_topology"), py::arg("timeline"),
      py::arg("worker_launch_prefix"), py::arg("object_store_prefault") = false);

  m.def("write_timeline", [](const std::string& path) {
    binding::ReleaseGil release;
    WriteTimeline(path);
  });

  m.def("shutdown", [] {
    binding::ReleaseGil release;
    Shutdown();
  });

  binding::BindObjects(m);
  binding::BindTasks(m);
  binding::BindGpu(m);
}
