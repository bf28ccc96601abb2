// The demo page imports exactly this: the official client, unmodified.
export { RealtimeClient, REALTIME_SUBSCRIBE_STATES } from '@supabase/realtime-js'
