-- Where a moved appointment was before its last move (rx_reschedule_appointment sets both), so
-- that Retell's retry of a move picked by date and time is answered with the move it already
-- made, rather than "I couldn't find an upcoming appointment" (moved_appointment).
alter table appointments
  add column if not exists rescheduled_from_date date,
  add column if not exists rescheduled_from_time time;
