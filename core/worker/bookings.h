// What a submitter's fast lane sent from a calling thread, waiting for the event loop to book
// it. The owner's lock (the one guarding its lane) guards Add and Flag; Drain takes that lock
// itself, and skips it while nothing was flagged, so the loop's entry points pay one atomic
// load when no lane was used.
#pragma once

#include <asio.hpp>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "base/mutex.h"

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
  void Drain(Mutex& mu, Book&& book) {
    if (!flagged_.load(std::memory_order_acquire)) return;
    // Two vectors trade places and keep their capacity: a burst of submissions does not grow
    // one from empty each time (the reallocations, and the frees of large blocks that make
    // malloc consolidate, cost more than the bookings themselves).
    std::vector<Booking> taken;
    taken.swap(spare_);
    {
      MutexLock lock(mu);
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
inline void PostDrain(asio::io_context& io, Mutex& mu, bool* posted, std::function<void()> drain) {
  asio::post(io, [&mu, posted, drain = std::move(drain)] {
    {
      MutexLock lock(mu);
      *posted = false;
    }
    drain();
  });
}

/// Books the replies that calling threads took off the loop's connections (OwnReply): the first
/// one after a drain starts a short timer on the loop (one wake-up), and the loop books all that
/// came by then when it fires. So replies are booked within about a millisecond (leases go back,
/// an actor's handle is let go), without a wake-up of the loop per reply.
class TakenRepliesDrain {
 public:
  static constexpr std::chrono::microseconds kDelay{1000};
  /// `drain` runs on `io`'s loop; `mu` is the owner's lock.
  TakenRepliesDrain(asio::io_context& io, Mutex& mu, std::function<void()> drain)
      : io_(io), mu_(mu), timer_(io), drain_(std::move(drain)) {}
  /// Under the owner's lock, after queuing a reply: whether the caller must Start() the timer
  /// (after the lock).
  bool Note() {
    if (armed_) return false;
    armed_ = true;
    return true;
  }
  /// Any thread.
  void Start() {
    asio::post(io_, [this] {
      timer_.expires_after(kDelay);
      timer_.async_wait([this](const asio::error_code& ec) {
        if (ec) return;  // (the owner is going)
        {
          MutexLock lock(mu_);
          armed_ = false;
        }
        drain_();
      });
    });
  }

 private:
  asio::io_context& io_;
  Mutex& mu_;
  asio::steady_timer timer_;  // the loop's
  std::function<void()> drain_;
  bool armed_ = false;  // under mu_: a drain is on its way
};

}  // namespace prism
