// What a submitter's fast lane sent from a calling thread, waiting for the event loop to book
// it. The owner's lock (the one guarding its lane) guards Add and Flag; Drain takes that lock
// itself, and skips it while nothing was flagged, so the loop's entry points pay one atomic
// load when no lane was used.
#pragma once

#include <asio.hpp>

#include <atomic>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

namespace prism {

template <typename Booking>
class Bookings {
 public:
  /// With the owner's lock held: a booking is coming. Called before the frame leaves, so that
  /// a reply handled meanwhile finds the flag up and waits on the lock for the booking.
  void Flag() { flagged_.store(true, std::memory_order_release); }
  /// With the owner's lock held.
  void Add(Booking b) {
    items_.push_back(std::move(b));
    Flag();
  }
  /// Event loop: takes the bookings (under `mu`, the owner's lock) and runs `book` on each.
  template <typename Book>
  void Drain(std::mutex& mu, Book&& book) {
    if (!flagged_.load(std::memory_order_acquire)) return;
    // Two vectors trade places and keep their capacity: a burst of submissions does not grow
    // one from empty each time (the reallocations, and the frees of large blocks that make
    // malloc consolidate, cost more than the bookings themselves).
    std::vector<Booking> taken;
    taken.swap(spare_);
    {
      std::lock_guard<std::mutex> lock(mu);
      taken.swap(items_);
      flagged_.store(false, std::memory_order_relaxed);
    }
    for (Booking& b : taken) book(b);
    taken.clear();
    spare_.swap(taken);
  }

 private:
  std::vector<Booking> items_;  // guarded by the owner's lock
  std::vector<Booking> spare_;  // event loop only
  std::atomic<bool> flagged_{false};
};

/// Posts `drain` to the loop for a thread that handed it work without waking it: `*posted`
/// (guarded by `mu`; the caller set it, under `mu`, when it decided to post) is cleared there
/// first, so work handed over while the drain runs posts another.
inline void PostDrain(asio::io_context& io, std::mutex& mu, bool* posted, std::function<void()> drain) {
  asio::post(io, [&mu, posted, drain = std::move(drain)] {
    {
      std::lock_guard<std::mutex> lock(mu);
      *posted = false;
    }
    drain();
  });
}

}  // namespace prism
