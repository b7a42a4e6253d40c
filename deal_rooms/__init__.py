"""deal_rooms"""
